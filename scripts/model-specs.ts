/**
 * Specifications of fairway's demo models, plus the deterministic weight
 * generator shared by the model builder (`scripts/build-models.ts`) and the
 * pure-TypeScript reference implementation used by the tests
 * (`test/helpers/reference.ts`).
 *
 * Every model is a plain MLP: a chain of fully-connected layers
 * (`y = act(x · W + b)`, W row-major `[in][out]`), optionally followed by a
 * softmax over the last axis. All tensors are FP32 and the batch dimension is
 * dynamic. Weights are never stored in the repository: they are regenerated
 * from `(spec.seed, layer.weightKey)` with a small seeded PRNG, so the builder
 * and the reference implementation always agree bit-for-bit on the weights.
 */

export type Activation = 'relu' | 'tanh' | 'none';

/** One fully-connected layer: `y = activation(x · W + b)`. */
export interface LayerSpec {
  /** Input width. */
  in: number;
  /** Output width. */
  out: number;
  activation: Activation;
  /**
   * Name of the weight/bias pair this layer uses. Layers with the same key
   * share ONE initializer pair in the ONNX file (so they must agree on
   * `in`/`out`/`activation`/`gain`); this is how `heavy-encoder` stays a
   * few MB on disk while costing many MFLOPs per row.
   */
  weightKey: string;
  /**
   * Multiplier on the default init scale (He-uniform for relu, Xavier-uniform
   * otherwise). Defaults to 1.
   */
  gain?: number;
}

export interface ModelSpec {
  id: string;
  version: string;
  /** Seed of the weight generator; different versions use different seeds. */
  seed: number;
  inputName: string;
  outputName: string;
  /** Width of the input tensor `[N, inputDim]`. */
  inputDim: number;
  /** Width of the output tensor `[N, outputDim]`. */
  outputDim: number;
  /**
   * Layers in execution order, fully expanded (a block repeated K times
   * appears K times, with the same `weightKey`).
   */
  layers: LayerSpec[];
  /** Apply softmax over the last axis after the last layer. */
  softmax: boolean;
  /** Human-readable description, copied into the ONNX doc_string. */
  description: string;
}

/** The weights of one `weightKey`. `w` is row-major `[in][out]`, `b` is `[out]`. */
export interface LayerWeights {
  w: Float32Array;
  b: Float32Array;
}

/** Number of shared 1024×1024 Gemm+Tanh repetitions in `heavy-encoder`. */
export const HEAVY_REPEATS = 12;

/** Hidden width of `heavy-encoder`. */
export const HEAVY_WIDTH = 1024;

function repeatLayer(layer: LayerSpec, times: number): LayerSpec[] {
  return Array.from({ length: times }, () => ({ ...layer }));
}

export const MODEL_SPECS: readonly ModelSpec[] = Object.freeze([
  {
    id: 'tiny-classifier',
    version: '1',
    seed: 0x7c1a_0001,
    inputName: 'input',
    outputName: 'probabilities',
    inputDim: 64,
    outputDim: 8,
    layers: [
      { in: 64, out: 256, activation: 'relu', weightKey: 'fc1' },
      { in: 256, out: 8, activation: 'none', weightKey: 'fc2' },
    ],
    softmax: true,
    description: 'tiny-classifier v1: [N,64] -> Gemm 256 + Relu -> Gemm 8 -> Softmax -> [N,8]',
  },
  {
    id: 'tiny-classifier',
    version: '2',
    seed: 0x7c1a_0002,
    inputName: 'input',
    outputName: 'probabilities',
    inputDim: 64,
    outputDim: 8,
    layers: [
      { in: 64, out: 256, activation: 'relu', weightKey: 'fc1' },
      { in: 256, out: 8, activation: 'none', weightKey: 'fc2' },
    ],
    softmax: true,
    description: 'tiny-classifier v2: [N,64] -> Gemm 256 + Relu -> Gemm 8 -> Softmax -> [N,8]',
  },
  {
    id: 'ranker',
    version: '1',
    seed: 0x4a4e_0001,
    inputName: 'features',
    outputName: 'score',
    inputDim: 256,
    outputDim: 1,
    layers: [
      { in: 256, out: 512, activation: 'relu', weightKey: 'fc1' },
      { in: 512, out: 128, activation: 'relu', weightKey: 'fc2' },
      { in: 128, out: 1, activation: 'none', weightKey: 'fc3' },
    ],
    softmax: false,
    description: 'ranker v1: [N,256] -> 512 relu -> 128 relu -> 1 -> [N,1]',
  },
  {
    id: 'heavy-encoder',
    version: '1',
    seed: 0x4e4c_0001,
    inputName: 'input',
    outputName: 'embedding',
    inputDim: 128,
    outputDim: 16,
    layers: [
      { in: 128, out: HEAVY_WIDTH, activation: 'tanh', weightKey: 'proj_in' },
      ...repeatLayer(
        { in: HEAVY_WIDTH, out: HEAVY_WIDTH, activation: 'tanh', weightKey: 'shared_block' },
        HEAVY_REPEATS,
      ),
      { in: HEAVY_WIDTH, out: 16, activation: 'none', weightKey: 'proj_out' },
    ],
    softmax: false,
    description:
      `heavy-encoder v1: [N,128] -> Gemm ${HEAVY_WIDTH} + Tanh -> ${HEAVY_REPEATS} x ` +
      `(Gemm ${HEAVY_WIDTH}x${HEAVY_WIDTH} + Tanh, one shared weight) -> Gemm 16 -> [N,16]`,
  },
] satisfies ModelSpec[]);

/** Looks up a spec by id and version; throws if there is none. */
export function findSpec(id: string, version: string): ModelSpec {
  const spec = MODEL_SPECS.find((s) => s.id === id && s.version === version);
  if (!spec) {
    const known = MODEL_SPECS.map((s) => `${s.id}@${s.version}`).join(', ');
    throw new Error(`unknown model ${id}@${version} (known: ${known})`);
  }
  return spec;
}

/** mulberry32: tiny, fast, seedable 32-bit PRNG. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 32-bit FNV-1a hash of a string (used to derive per-weightKey seeds). */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Weight init half-range: He-uniform for relu, Xavier-uniform otherwise. */
function initLimit(layer: LayerSpec): number {
  const gain = layer.gain ?? 1;
  const base =
    layer.activation === 'relu' ? Math.sqrt(6 / layer.in) : Math.sqrt(6 / (layer.in + layer.out));
  return gain * base;
}

/** Bias half-range (biases are small so they never dominate the signal). */
const BIAS_LIMIT = 0.05;

/**
 * Throws unless every layer chains onto the previous one, the end widths
 * match the spec, and layers sharing a `weightKey` agree on their shape.
 */
export function validateSpec(spec: ModelSpec): void {
  if (spec.layers.length === 0) throw new Error(`${spec.id}@${spec.version}: no layers`);
  let width = spec.inputDim;
  const byKey = new Map<string, LayerSpec>();
  spec.layers.forEach((layer, i) => {
    if (layer.in !== width) {
      throw new Error(`${spec.id}@${spec.version}: layer ${i} expects ${layer.in} inputs, got ${width}`);
    }
    width = layer.out;
    const first = byKey.get(layer.weightKey);
    if (first === undefined) {
      byKey.set(layer.weightKey, layer);
    } else if (
      first.in !== layer.in ||
      first.out !== layer.out ||
      first.activation !== layer.activation ||
      (first.gain ?? 1) !== (layer.gain ?? 1)
    ) {
      throw new Error(
        `${spec.id}@${spec.version}: layer ${i} shares weightKey '${layer.weightKey}' with a different shape`,
      );
    }
  });
  if (width !== spec.outputDim) {
    throw new Error(`${spec.id}@${spec.version}: last layer has ${width} outputs, spec says ${spec.outputDim}`);
  }
}

/**
 * Deterministically generates the weights of every distinct `weightKey` of
 * `spec` (in order of first use). Each key gets its own PRNG stream seeded
 * from `(spec.seed, weightKey)`, so the weights of one layer don't depend on
 * the other layers. `w` is row-major `[in][out]` (the ONNX Gemm `B` operand
 * with `transB = 0`); values are uniform in ±limit where limit follows
 * He (relu) / Xavier (tanh, none) init, biases are uniform in ±0.05.
 */
export function weightsFor(spec: ModelSpec): Map<string, LayerWeights> {
  validateSpec(spec);
  const out = new Map<string, LayerWeights>();
  for (const layer of spec.layers) {
    if (out.has(layer.weightKey)) continue;
    const rand = mulberry32((spec.seed ^ fnv1a(layer.weightKey)) >>> 0);
    const limit = initLimit(layer);
    const w = new Float32Array(layer.in * layer.out);
    for (let i = 0; i < w.length; i++) w[i] = (rand() * 2 - 1) * limit;
    const b = new Float32Array(layer.out);
    for (let i = 0; i < b.length; i++) b[i] = (rand() * 2 - 1) * BIAS_LIMIT;
    out.set(layer.weightKey, { w, b });
  }
  return out;
}

/** Relative location of a model file under a models directory: `<id>/<version>/model.onnx`. */
export function modelRelPath(spec: Pick<ModelSpec, 'id' | 'version'>): string {
  return `${spec.id}/${spec.version}/model.onnx`;
}
