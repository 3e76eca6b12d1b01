/**
 * Builds the demo ONNX models into a temp dir, runs them with onnxruntime-node
 * and checks every output element against the plain-TypeScript reference
 * forward pass (test/helpers/reference.ts).
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as ort from 'onnxruntime-node';
import t from 'tap';

import { buildModels, encodeModel } from '../scripts/build-models.js';
import { HEAVY_REPEATS, MODEL_SPECS, modelRelPath, weightsFor, type ModelSpec } from '../scripts/model-specs.js';
import { referenceForward, sampleInput, specFor } from './helpers/reference.js';

const ABS_TOL = 1e-4;
const REL_TOL = 1e-3;
/** Upper bound on any model file (the heavy model must stay "a few MB"). */
const MAX_FILE_BYTES = 8 * 1024 * 1024;

/** Batch sizes to test per model; the heavy model's JS reference is slow, so keep it small. */
function batchesFor(spec: ModelSpec): number[] {
  return spec.id === 'heavy-encoder' ? [1, 2] : [1, 5];
}

const outDir = await mkdtemp(join(tmpdir(), 'fairway-models-'));
t.teardown(() => rm(outDir, { recursive: true, force: true }));

const paths = await buildModels(outDir);

const sessions = new Map<string, ort.InferenceSession>();
t.teardown(async () => {
  for (const s of sessions.values()) await s.release();
});

async function sessionFor(spec: ModelSpec): Promise<ort.InferenceSession> {
  const key = `${spec.id}@${spec.version}`;
  let s = sessions.get(key);
  if (!s) {
    s = await ort.InferenceSession.create(join(outDir, modelRelPath(spec)), { intraOpNumThreads: 1 });
    sessions.set(key, s);
  }
  return s;
}

async function run(spec: ModelSpec, input: Float32Array, rows: number): Promise<ort.Tensor> {
  const session = await sessionFor(spec);
  const feeds = { [spec.inputName]: new ort.Tensor('float32', input, [rows, spec.inputDim]) };
  const result = await session.run(feeds);
  const out = result[spec.outputName];
  if (!out) throw new Error(`no output '${spec.outputName}' from ${spec.id}@${spec.version}`);
  return out;
}

t.test('buildModels writes one file per spec, small and deterministic', async (t) => {
  t.equal(paths.length, MODEL_SPECS.length);
  for (const [i, spec] of MODEL_SPECS.entries()) {
    const path = paths[i]!;
    t.equal(path, join(outDir, spec.id, spec.version, 'model.onnx'), `${spec.id}@${spec.version} path`);
    const { size } = await stat(path);
    t.ok(size > 0 && size < MAX_FILE_BYTES, `${spec.id}@${spec.version} is ${size} bytes`);
    const onDisk = await readFile(path);
    t.ok(Buffer.from(encodeModel(spec)).equals(onDisk), `${spec.id}@${spec.version} re-encodes identically`);
  }
  // Rebuilding over existing files works and produces the same bytes.
  const before = await readFile(paths[0]!);
  await buildModels(outDir, [MODEL_SPECS[0]!]);
  t.ok(before.equals(await readFile(paths[0]!)), 'rebuild is byte-identical');
});

t.test('weightsFor is deterministic and shares weights by key', async (t) => {
  const heavy = specFor('heavy-encoder', '1');
  const a = weightsFor(heavy);
  const b = weightsFor(heavy);
  t.same([...a.keys()], ['proj_in', 'shared_block', 'proj_out']);
  t.equal(heavy.layers.filter((l) => l.weightKey === 'shared_block').length, HEAVY_REPEATS);
  const sameBits = (x: Float32Array, y: Float32Array): boolean =>
    Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  for (const [key, w] of a) {
    t.ok(sameBits(w.w, b.get(key)!.w), `${key}.w stable`);
    t.ok(sameBits(w.b, b.get(key)!.b), `${key}.b stable`);
    t.ok(w.w.every(Number.isFinite) && w.w.some((v) => v !== 0), `${key}.w finite and non-zero`);
  }
  // A different seed gives different weights.
  const reseeded = weightsFor({ ...heavy, seed: heavy.seed + 1 });
  t.notOk(sameBits(a.get('proj_in')!.w, reseeded.get('proj_in')!.w), 'seed changes the weights');
  t.throws(() => specFor('no-such-model', '1'));
});

for (const spec of MODEL_SPECS) {
  t.test(`${spec.id}@${spec.version} matches the reference`, async (t) => {
    const session = await sessionFor(spec);
    t.same(session.inputNames, [spec.inputName]);
    t.same(session.outputNames, [spec.outputName]);
    for (const rows of batchesFor(spec)) {
      const input = sampleInput(spec.inputDim, rows, 1000 + rows);
      const out = await run(spec, input, rows);
      t.equal(out.type, 'float32');
      t.same(out.dims, [rows, spec.outputDim], `batch ${rows} output shape`);
      const got = out.data as Float32Array;
      const want = referenceForward(spec, input, rows);
      let bad = 0;
      let worst = 0;
      for (let i = 0; i < want.length; i++) {
        const g = got[i]!;
        const w = want[i]!;
        const err = Math.abs(g - w);
        worst = Math.max(worst, err);
        if (!Number.isFinite(g) || err > ABS_TOL + REL_TOL * Math.abs(w)) {
          if (bad++ < 5) t.fail(`batch ${rows} [${Math.floor(i / spec.outputDim)}, ${i % spec.outputDim}]: got ${g}, want ${w}`);
        }
      }
      t.equal(bad, 0, `batch ${rows}: all ${want.length} elements within tolerance (max abs err ${worst.toExponential(2)})`);

      // Rows are independent: each row of the batch equals that row run alone.
      if (rows > 1) {
        const single = await run(spec, input.slice(0, spec.inputDim), 1);
        const first = Array.from(got.slice(0, spec.outputDim));
        const alone = Array.from(single.data as Float32Array);
        t.ok(
          first.every((v, j) => Math.abs(v - alone[j]!) <= ABS_TOL),
          `batch ${rows}: row 0 matches the batch-1 result`,
        );
      }

      if (spec.softmax) {
        for (let r = 0; r < rows; r++) {
          const row = Array.from(got.slice(r * spec.outputDim, (r + 1) * spec.outputDim));
          const sum = row.reduce((acc, p) => acc + p, 0);
          t.ok(row.every((p) => p >= 0 && p <= 1), `batch ${rows} row ${r}: probabilities in [0, 1]`);
          t.ok(Math.abs(sum - 1) < 1e-5, `batch ${rows} row ${r} sums to 1 (${sum})`);
        }
      }
    }
  });
}

t.test('outputs depend on the input', async (t) => {
  for (const spec of MODEL_SPECS) {
    const rows = 2;
    const out = (await run(spec, sampleInput(spec.inputDim, rows, 7), rows)).data as Float32Array;
    let diff = 0;
    for (let j = 0; j < spec.outputDim; j++) diff = Math.max(diff, Math.abs(out[j]! - out[spec.outputDim + j]!));
    t.ok(diff > 1e-3, `${spec.id}@${spec.version}: two different rows give different outputs (max diff ${diff})`);
  }
});

t.test('tiny-classifier v1 and v2 differ', async (t) => {
  const v1 = specFor('tiny-classifier', '1');
  const v2 = specFor('tiny-classifier', '2');
  const rows = 5;
  const input = sampleInput(v1.inputDim, rows, 42);
  const a = (await run(v1, input, rows)).data as Float32Array;
  const b = (await run(v2, input, rows)).data as Float32Array;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
  t.ok(maxDiff > 1e-3, `max probability difference ${maxDiff}`);
  const onDisk1 = await readFile(join(outDir, modelRelPath(v1)));
  const onDisk2 = await readFile(join(outDir, modelRelPath(v2)));
  t.notOk(onDisk1.equals(onDisk2), 'model files differ');
});
