/**
 * Builds fairway's demo ONNX models from `MODEL_SPECS` (see `model-specs.ts`).
 *
 *   node dist/scripts/build-models.js [outDir]
 *
 * writes `<outDir>/<modelId>/<version>/model.onnx` for every spec; `outDir`
 * defaults to `<package root>/models`. Weights are generated deterministically,
 * so the output bytes are identical on every run. Files are always rewritten
 * (write to a temp file, then rename, so a reader never sees a partial file).
 *
 * Graph per model: `Gemm(+Relu|Tanh)` per layer (opset 13, ir_version 8,
 * FP32, input/output `[batch, dim]` with a symbolic batch dimension), then an
 * optional `Softmax(axis=-1)`. Layers sharing a `weightKey` reference the
 * same initializers.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import onnxProto from 'onnx-proto';

import { MODEL_SPECS, modelRelPath, weightsFor, type ModelSpec } from './model-specs.js';

const { onnx } = onnxProto;

export const IR_VERSION = 8;
export const OPSET_VERSION = 13;
export const BATCH_DIM_PARAM = 'batch';

/** Walks up from this file to the directory whose package.json is named "fairway". */
export function findPackageRoot(start: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = resolve(start);
  for (;;) {
    const pkgPath = join(dir, 'package.json');
    if (existsSync(pkgPath)) {
      try {
        const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { name?: unknown };
        if (pkg.name === 'fairway') return dir;
      } catch {
        // unreadable package.json: keep walking up
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json named "fairway" above ${start}`);
    dir = parent;
  }
}

/** Default output directory: `<package root>/models`. */
export function defaultModelsDir(): string {
  return join(findPackageRoot(), 'models');
}

/** Little-endian FP32 bytes (ONNX raw_data is always little-endian). */
function float32RawData(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
  return bytes;
}

function floatTensor(name: string, dims: number[], values: Float32Array): onnxProto.onnx.ITensorProto {
  return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: float32RawData(values) };
}

function matrixValueInfo(name: string, width: number): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: [{ dimParam: BATCH_DIM_PARAM }, { dimValue: width }] },
      },
    },
  };
}

function intAttr(name: string, i: number): onnxProto.onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i };
}

function floatAttr(name: string, f: number): onnxProto.onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f };
}

/** Builds the ONNX ModelProto for one spec. */
export function buildModelProto(spec: ModelSpec): onnxProto.onnx.IModelProto {
  const weights = weightsFor(spec);
  const initializer: onnxProto.onnx.ITensorProto[] = [];
  const initNames = new Map<string, { w: string; b: string }>();
  for (const layer of spec.layers) {
    if (initNames.has(layer.weightKey)) continue;
    const lw = weights.get(layer.weightKey)!;
    const names = { w: `${layer.weightKey}.weight`, b: `${layer.weightKey}.bias` };
    initNames.set(layer.weightKey, names);
    initializer.push(floatTensor(names.w, [layer.in, layer.out], lw.w));
    initializer.push(floatTensor(names.b, [layer.out], lw.b));
  }

  const nodes: onnxProto.onnx.INodeProto[] = [];
  let current = spec.inputName;
  const last = spec.layers.length - 1;
  spec.layers.forEach((layer, i) => {
    const names = initNames.get(layer.weightKey)!;
    const isFinal = i === last && !spec.softmax;
    const gemmOut = isFinal && layer.activation === 'none' ? spec.outputName : `layer${i}.gemm`;
    nodes.push({
      name: `layer${i}/Gemm`,
      opType: 'Gemm',
      input: [current, names.w, names.b],
      output: [gemmOut],
      attribute: [floatAttr('alpha', 1), floatAttr('beta', 1), intAttr('transA', 0), intAttr('transB', 0)],
    });
    current = gemmOut;
    if (layer.activation !== 'none') {
      const actOut = isFinal ? spec.outputName : `layer${i}.${layer.activation}`;
      nodes.push({
        name: `layer${i}/${layer.activation === 'relu' ? 'Relu' : 'Tanh'}`,
        opType: layer.activation === 'relu' ? 'Relu' : 'Tanh',
        input: [current],
        output: [actOut],
      });
      current = actOut;
    }
  });
  if (spec.softmax) {
    nodes.push({
      name: 'Softmax',
      opType: 'Softmax',
      input: [current],
      output: [spec.outputName],
      attribute: [intAttr('axis', -1)],
    });
  }

  const modelVersion = Number.parseInt(spec.version, 10);
  return {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET_VERSION }],
    producerName: 'fairway',
    producerVersion: '1',
    domain: 'dev.fairway.demo',
    modelVersion: Number.isFinite(modelVersion) ? modelVersion : 0,
    docString: spec.description,
    metadataProps: [
      { key: 'fairway.model_id', value: spec.id },
      { key: 'fairway.model_version', value: spec.version },
      { key: 'fairway.seed', value: String(spec.seed) },
    ],
    graph: {
      name: `${spec.id}_v${spec.version}`.replace(/[^A-Za-z0-9_]/g, '_'),
      node: nodes,
      initializer,
      input: [matrixValueInfo(spec.inputName, spec.inputDim)],
      output: [matrixValueInfo(spec.outputName, spec.outputDim)],
    },
  };
}

/** Serialises one spec to ONNX protobuf bytes (deterministic). */
export function encodeModel(spec: ModelSpec): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(buildModelProto(spec))).finish();
}

/**
 * Writes every model of `specs` to `<outDir>/<id>/<version>/model.onnx`
 * (always rewritten, atomically via rename) and returns the absolute paths
 * written, in spec order.
 */
export async function buildModels(
  outDir: string = defaultModelsDir(),
  specs: readonly ModelSpec[] = MODEL_SPECS,
): Promise<string[]> {
  const written: string[] = [];
  for (const spec of specs) {
    const path = resolve(outDir, modelRelPath(spec));
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      await writeFile(tmp, encodeModel(spec));
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    written.push(path);
  }
  return written;
}

function isMainModule(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMainModule()) {
  const started = performance.now();
  const outDir = process.argv[2] ? resolve(process.argv[2]) : defaultModelsDir();
  buildModels(outDir).then(
    async (paths) => {
      const { stat } = await import('node:fs/promises');
      for (const p of paths) {
        const { size } = await stat(p);
        console.log(`wrote ${p} (${(size / 1024 / 1024).toFixed(2)} MiB)`);
      }
      console.log(`built ${paths.length} models in ${Math.round(performance.now() - started)} ms`);
    },
    (err: unknown) => {
      console.error('build-models failed:', err);
      process.exitCode = 1;
    },
  );
}
