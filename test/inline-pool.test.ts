// `"runtime": "inline"`: a class whose batches run on the gateway thread.
// The pool against an independent forward pass, its refusals, its checks at
// load, the config rules, and a real server whose shared class is inline:
// a concurrent burst over HTTP comes back right, and in fewer batches than
// requests (requests of one event-loop turn share a batch).

import t from 'tap'
import { threadId } from 'node:worker_threads'
import { checkConfig } from '../src/control-plane/load-config.js'
import { AdmissionTable } from '../src/admission/admission-table.js'
import { TenantRegistry } from '../src/control-plane/registry.js'
import type { FairwayError } from '../src/errors.js'
import { InferenceService } from '../src/gateway/inference-service.js'
import { InlinePool } from '../src/runtime/inline-pool.js'
import { ClassScheduler } from '../src/scheduling/class-scheduler.js'
import { GatewayMetrics } from '../src/telemetry/metrics.js'
import { call, classUnits, configFrom, demoRaw, DEMO_CONFIG_FILE, holdFirstBatch, inferBody, KEYS, start, type RawConfig } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'
import { dirname } from 'node:path'

function inlineDemo (): RawConfig {
  const raw = demoRaw()
  raw.serviceClasses.shared = { weight: 1, runtime: 'inline', maxQueued: 512 }
  return raw
}

const config = configFrom(inlineDemo())
const { sc, units, tiny } = classUnits(config, 'shared')
const spec = specFor('tiny-classifier', tiny.version.version)

const close = (a: ArrayLike<number>, b: ArrayLike<number>): boolean =>
  a.length === b.length && Array.from(a).every((v, i) => Math.abs(v - (b[i] as number)) < 1e-4 + 1e-3 * Math.abs(b[i] as number))

t.test('the config: an inline class has no CPU set, workers, nice or lending of its own', async (t) => {
  t.equal(sc.runtime, 'inline')
  t.same(sc.cpus, [], 'no CPU set')
  t.equal(sc.workers, 1, 'one batch at a time')
  t.equal(config.serviceClasses.get('heavy')?.runtime, 'workers', 'the default is worker threads')
  const base = dirname(DEMO_CONFIG_FILE)
  for (const [key, value, path] of [
    ['cpus', [0], '$.serviceClasses.shared.cpus'],
    ['workers', 2, '$.serviceClasses.shared.workers'],
    ['nice', 5, '$.serviceClasses.shared.nice'],
    ['lendTo', ['premium_shared'], '$.serviceClasses.shared.lendTo'],
    ['device', 'cuda', '$.serviceClasses.shared.device'],
  ] as const) {
    const raw = inlineDemo()
    raw.serviceClasses.shared[key] = value
    const res = checkConfig(raw, base)
    t.notOk(res.ok, `${key} is refused on an inline class`)
    if (!res.ok) t.ok(res.problems.some((p) => p.path === path), `the problem names ${path}`)
  }
  const bad = inlineDemo()
  bad.serviceClasses.shared.runtime = 'threads'
  const res = checkConfig(bad, base)
  t.ok(!res.ok && res.problems.some((p) => p.path === '$.serviceClasses.shared.runtime'), 'an unknown runtime is refused')
})

t.test('batches run on this thread and match the reference; times are measured', async (t) => {
  const pool = new InlinePool(sc, units)
  t.teardown(() => pool.close())
  const pings = await pool.start()
  t.equal(pings.length, 1)
  t.equal(pings[0]?.threadId, threadId, 'reports the calling (gateway) thread')
  for (const rows of [1, 5, tiny.model.maxBatchSize]) {
    const x = sampleInput(64, rows, 40 + rows)
    const cut = Math.floor(rows / 2) * 64
    const res = await pool.run({ unit: tiny.key, rows, parts: [{ input: x.subarray(0, cut) }, { input: x.subarray(cut) }] })
    t.ok(close(res.output, referenceForward(spec, x, rows)), `${rows} row(s): output equals the reference`)
    t.ok(res.inferenceNs > 0 && res.cpuNs > 0, 'inference and CPU times are reported')
  }
  // A smaller batch after a full one: only its own rows are computed.
  const x = sampleInput(64, 2, 7)
  const res = await pool.run({ unit: tiny.key, rows: 2, parts: [{ input: x }] })
  t.equal(res.output.length, 2 * 8, 'two rows of output')
  t.ok(close(res.output, referenceForward(spec, x, 2)), 'and they are right')
})

t.test('a batch is computed before run returns: no loop turn of its own', async (t) => {
  const pool = new InlinePool(sc, units)
  t.teardown(() => pool.close())
  await pool.start()
  t.equal(pool.runsOnCaller, true, 'says so to the scheduler')
  let settled = false
  void pool.run({ unit: tiny.key, rows: 1, parts: [{ input: sampleInput(64, 1, 9) }] }).then(() => { settled = true })
  // Two microtask hops, no macrotask: a setImmediate inside run would not have run yet.
  await Promise.resolve()
  await Promise.resolve()
  t.ok(settled, 'the promise was settled when run returned')
})

t.test('a backlog on an inline class runs one batch per event-loop turn, so sockets are read between batches', async (t) => {
  const registry = new TenantRegistry(config)
  const admission = new AdmissionTable(registry.tenants.length, registry.classSlots.size)
  for (const tn of registry.tenants) admission.setTenantPolicy(tn.slot, tn.config.limits)
  for (const [id, slot] of registry.classSlots) admission.setClassShed(slot, config.serviceClasses.get(id)?.maxQueued ?? 1)
  const pool = new InlinePool(sc, units)
  await pool.start()
  const scheduler = new ClassScheduler(pool, units, admission, registry.classSlots.get('shared') ?? 0, () => 1)
  const service = new InferenceService(admission, new Map([['shared', scheduler]]), new GatewayMetrics(), null)
  t.teardown(async () => { scheduler.stop(); await pool.close() })
  const tenant = registry.tenantById('globex')
  if (tenant === undefined) throw new Error('no globex')
  const route = registry.resolve(tenant, 'tiny-classifier', null)
  const rows = tiny.model.maxBatchSize / 2
  // Six requests of half a batch each, in one tick: three full batches.
  const inputs = Array.from({ length: 6 }, (_, i) => sampleInput(64, rows, 900 + i))
  const answers = inputs.map(async (x) => await new Promise<{ err: FairwayError | null, output: Float32Array | null }>((resolve) => {
    service.submit(route, 'test', { id: undefined, rows, data: x, timeoutMs: null }, null, performance.now(), (err, output) => { resolve({ err, output: output?.slice() ?? null }) })
  }))
  const turn = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }
  // The pump's setImmediate was queued before this one: one batch has run.
  await turn()
  t.equal(scheduler.stats.batches, 1, 'one batch in the first turn')
  t.equal(scheduler.queued, 4, 'the rest waits for later turns')
  await turn()
  t.equal(scheduler.stats.batches, 2, 'the second batch in the next turn')
  const got = await Promise.all(answers)
  t.equal(scheduler.stats.batches, 3, 'three batches in all')
  t.ok(got.every((a, i) => a.err === null && a.output !== null && close(a.output, referenceForward(spec, inputs[i] as Float32Array, rows))), 'every answer equals the reference')
  await turn()
  t.equal(scheduler.busyWorkers, 0, 'the class is idle again')
  t.equal(admission.inflight(tenant.slot), 0, 'every admission was given back')
})

t.test('refusals have stable codes; a closed pool refuses', async (t) => {
  const pool = new InlinePool(sc, units)
  await pool.start()
  const rows = tiny.model.maxBatchSize + 1
  await t.rejects(pool.run({ unit: tiny.key, rows, parts: [{ input: sampleInput(64, rows, 1) }] }), { code: 'FW_ERR_RUNTIME_INFERENCE_FAILED' }, 'over maxBatchSize')
  await t.rejects(pool.run({ unit: 'nope@1', rows: 1, parts: [{ input: sampleInput(64, 1, 1) }] }), { code: 'FW_ERR_RUNTIME_INFERENCE_FAILED' }, 'unknown unit')
  const ok = await pool.run({ unit: tiny.key, rows: 1, parts: [{ input: sampleInput(64, 1, 2) }] })
  t.equal(ok.output.length, 8, 'still serves after the refusals')
  await pool.close()
  await t.rejects(pool.run({ unit: tiny.key, rows: 1, parts: [{ input: sampleInput(64, 1, 3) }] }), { code: 'FW_ERR_RUNTIME_INFERENCE_FAILED' }, 'a closed pool refuses a batch')
})

t.test('a catalog input name the model does not have fails at start, not per request', async (t) => {
  const wrong = units.map((u) => u === tiny ? { ...u, model: { ...u.model, input: { ...u.model.input, name: 'pixels' } } } : u)
  const pool = new InlinePool(sc, wrong)
  await t.rejects(pool.start(), { code: 'FW_ERR_RUNTIME_MODEL_LOAD', message: /pixels/ })
})

t.test('a server with an inline shared class: a burst queued behind a busy batch is answered right, in one batch', async (t) => {
  const { server, url } = await start(inlineDemo())
  t.teardown(() => server.close())
  t.ok(server.workers.some((w) => w.classId === 'shared' && w.threadId === threadId), 'the shared class runs on the gateway thread')
  const shared = server.schedulers.get('shared')
  if (shared === undefined) throw new Error('no shared scheduler')
  // The first batch's result is held, so the class is provably busy while
  // the rest of the burst arrives and queues (globex may have 16 in flight).
  const hold = holdFirstBatch(t, shared)
  const n = 12
  const xs = Array.from({ length: n }, (_, i) => sampleInput(64, 1, 500 + i))
  const replies = Promise.all(xs.map(async (x) => await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, body: inferBody('input', 1, 64, x) })))
  const giveUp = Date.now() + 30_000
  while (hold.ran === 0 || shared.queued + shared.stats.rows < n) {
    if (Date.now() > giveUp) throw new Error('the burst never queued')
    await new Promise((r) => setImmediate(r))
  }
  hold.release()
  const got = await replies
  t.same(got.map((r) => r.status), xs.map(() => 200), 'all answered 200')
  t.ok(got.every((r, i) => close(r.json.outputs[0].data as number[], referenceForward(spec, xs[i] as Float32Array, 1))), 'every answer equals the reference')
  t.equal(shared.stats.rows, n, 'the shared class ran every row')
  t.ok(shared.stats.batches <= 2, `the queued requests ran as one batch (${shared.stats.batches} batches for ${n} requests)`)
})
