/**
 * Plain-TypeScript reference implementation of the demo models described by
 * `scripts/model-specs.ts`, independent of onnxruntime: Float64 math over the
 * same (FP32) weights that the builder writes into the ONNX files.
 */
import { findSpec, mulberry32, weightsFor, type ModelSpec } from '../../scripts/model-specs.js';

/** The spec of model `id` at `version`; throws if there is none. */
export function specFor(id: string, version: string): ModelSpec {
  return findSpec(id, version);
}

/**
 * Deterministic input batch: `rows × dim` FP32 values, row-major, uniform in
 * [-1, 1), from a mulberry32 stream seeded with `seed`.
 */
export function sampleInput(dim: number, rows: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(dim * rows);
  for (let i = 0; i < out.length; i++) out[i] = rand() * 2 - 1;
  return out;
}

/**
 * Forward pass of `spec` over `rows` input rows (`input` is row-major
 * `[rows][spec.inputDim]`). Returns row-major `[rows][spec.outputDim]` in
 * Float64.
 */
export function referenceForward(spec: ModelSpec, input: Float32Array, rows: number): Float64Array {
  if (!Number.isInteger(rows) || rows < 0) throw new RangeError(`bad row count ${rows}`);
  if (input.length !== rows * spec.inputDim) {
    throw new RangeError(`input has ${input.length} values, expected ${rows} x ${spec.inputDim}`);
  }
  const weights = weightsFor(spec);
  // Widen the weights to Float64 once per key (the FP32 values are exact in Float64).
  const wide = new Map<string, { w: Float64Array; b: Float64Array }>();
  for (const [key, { w, b }] of weights) wide.set(key, { w: Float64Array.from(w), b: Float64Array.from(b) });

  let x = Float64Array.from(input);
  let width = spec.inputDim;
  for (const layer of spec.layers) {
    const { w, b } = wide.get(layer.weightKey)!;
    const n = layer.out;
    const y = new Float64Array(rows * n);
    for (let r = 0; r < rows; r++) {
      const xo = r * width;
      const yo = r * n;
      for (let j = 0; j < n; j++) y[yo + j] = b[j]!;
      for (let k = 0; k < width; k++) {
        const xv = x[xo + k]!;
        if (xv === 0) continue;
        const wo = k * n;
        for (let j = 0; j < n; j++) y[yo + j] += xv * w[wo + j]!;
      }
      if (layer.activation === 'relu') {
        for (let j = 0; j < n; j++) if (y[yo + j]! < 0) y[yo + j] = 0;
      } else if (layer.activation === 'tanh') {
        for (let j = 0; j < n; j++) y[yo + j] = Math.tanh(y[yo + j]!);
      }
    }
    x = y;
    width = n;
  }

  if (spec.softmax) {
    for (let r = 0; r < rows; r++) {
      const o = r * width;
      let max = -Infinity;
      for (let j = 0; j < width; j++) max = Math.max(max, x[o + j]!);
      let sum = 0;
      for (let j = 0; j < width; j++) {
        const e = Math.exp(x[o + j]! - max);
        x[o + j] = e;
        sum += e;
      }
      for (let j = 0; j < width; j++) x[o + j] = x[o + j]! / sum;
    }
  }
  return x;
}
