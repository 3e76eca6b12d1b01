// A class pool end to end through its workers' mailboxes (real Piscina
// threads, real onnxruntime): batches of every size up to the model's limit
// come back equal to an independent forward pass, all workers at once, and
// close() ends the long-lived serve tasks.

import t from 'tap'
import { ClassPool } from '../src/runtime/class-pool.js'
import { classUnits, configFrom, demoRaw } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'

const raw = demoRaw()
raw.serviceClasses.shared.workers = 2
const { sc, units, tiny } = classUnits(configFrom(raw), 'shared')

const close = (a: ArrayLike<number>, b: ArrayLike<number>): boolean =>
  a.length === b.length && Array.from(a).every((v, i) => Math.abs(v - (b[i] as number)) < 1e-4 + 1e-3 * Math.abs(b[i] as number))

t.test('batches through the mailbox match the reference and report worker times', async (t) => {
  const pool = new ClassPool(sc, units)
  t.teardown(() => pool.close())
  const pings = await pool.start()
  t.equal(pings.length, 2, 'two workers started')
  const spec = specFor('tiny-classifier', tiny.version.version)
  for (const rows of [1, 3, tiny.model.maxBatchSize]) {
    const x = sampleInput(64, rows, rows)
    // Several requests' inputs, back to back, make one batch in the mailbox.
    const cut = Math.floor(rows / 2) * 64
    const res = await pool.run({ unit: tiny.key, rows, parts: [{ input: x.subarray(0, cut) }, { input: x.subarray(cut) }] })
    t.ok(close(res.output, referenceForward(spec, x, rows)), `${rows} row(s): output equals the reference`)
    t.ok(res.inferenceNs > 0 && res.cpuNs > 0, 'worker-measured times are reported')
  }
  // Both workers at once, twenty rounds: every result lands in its own batch.
  for (let round = 0; round < 20; round++) {
    const xs = [sampleInput(64, 2, 100 + round), sampleInput(64, 2, 200 + round)]
    const outs = await Promise.all(xs.map(async (x) => await pool.run({ unit: tiny.key, rows: 2, parts: [{ input: x }] })))
    if (!outs.every((o, i) => close(o.output, referenceForward(spec, xs[i] as Float32Array, 2)))) {
      t.fail(`round ${round}: a concurrent result was wrong`)
      return
    }
  }
  t.pass('forty concurrent batches on two workers all matched')
})

t.test('a batch the pool cannot take is refused with a stable code, and the pool still works', async (t) => {
  const pool = new ClassPool(sc, units)
  t.teardown(() => pool.close())
  await pool.start()
  const rows = tiny.model.maxBatchSize * 4
  await t.rejects(pool.run({ unit: tiny.key, rows, parts: [{ input: sampleInput(64, rows, 1) }] }), { code: 'FW_ERR_RUNTIME_INFERENCE_FAILED' }, 'oversized batch')
  await t.rejects(pool.run({ unit: 'nope@1', rows: 1, parts: [{ input: sampleInput(64, 1, 1) }] }), { code: 'FW_ERR_RUNTIME_INFERENCE_FAILED' }, 'unknown unit')
  const x = sampleInput(64, 1, 5)
  const ok = await Promise.all([pool.run({ unit: tiny.key, rows: 1, parts: [{ input: x }] }), pool.run({ unit: tiny.key, rows: 1, parts: [{ input: x }] })])
  t.equal(ok.length, 2, 'both mailboxes are free again after the refusals')
})

t.test('close() stops the serve tasks and refuses later batches', async (t) => {
  const pool = new ClassPool(sc, units)
  await pool.start()
  await pool.close()
  await t.rejects(pool.run({ unit: tiny.key, rows: 1, parts: [{ input: sampleInput(64, 1, 1) }] }), { code: 'FW_ERR_RUNTIME_INFERENCE_FAILED' })
})

t.test('a worker thread that dies is replaced: its mailbox is served again, never shared by two batches', async (t) => {
  const pool = new ClassPool(sc, units) // two workers
  t.teardown(() => pool.close())
  await pool.start()
  const spec = specFor('tiny-classifier', tiny.version.version)
  const xs = [sampleInput(64, 2, 31), sampleInput(64, 2, 32)]
  const wants = xs.map((x) => referenceForward(spec, x, 2))
  const both = async (): Promise<Array<{ ok: boolean, code?: string }>> => await Promise.all(xs.map(async (x, i) => {
    try {
      return { ok: close((await pool.run({ unit: tiny.key, rows: 2, parts: [{ input: x }] })).output, wants[i] as Float64Array) }
    } catch (err) {
      return { ok: false, code: (err as { code?: string }).code }
    }
  }))
  t.same(await both(), [{ ok: true }, { ok: true }], 'both workers serve before the crash')
  // Kill one thread while it sleeps on its (free) mailbox. Piscina exposes
  // its Worker objects; reaching the pool's private Piscina is test-only.
  const piscina = (pool as unknown as { piscina: { threads: Array<{ terminate: () => Promise<number> }> } }).piscina
  t.equal(piscina.threads.length, 2)
  await piscina.threads[0]?.terminate()
  // Until the replacement thread serves again, a batch waits in the mailbox
  // or fails with the stable code; two concurrent batches never share a
  // mailbox (each gets its own input's answer), and none is lost.
  let rounds = 0
  let failed = 0
  for (let i = 0; i < 50 && rounds < 5; i++) {
    const r = await both()
    if (r.every((x) => x.ok)) { rounds++; continue }
    for (const x of r) if (!x.ok && x.code !== 'FW_ERR_RUNTIME_INFERENCE_FAILED') { t.fail(`wrong answer or code after the crash: ${JSON.stringify(x)}`); return }
    failed++
  }
  t.equal(rounds, 5, `five rounds on both workers after the crash (${failed} round(s) with a failed batch)`)
})
