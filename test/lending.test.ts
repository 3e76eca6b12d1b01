// Work-conserving lending between classes, and the operator metrics that
// report it: idle reserved capacity serves a busy class, a dedicated class
// lends to nobody, only full batches are lent, the owner's own work takes a
// lent worker back at the next batch, and /metrics is for operators only.

import t, { type Test } from 'tap'
import { call, demoRaw, holdFirstBatch, inferBody, KEYS, start } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'

const raw = demoRaw()
// The shared class lends its idle worker to the heavy class, and only the
// shared class's own worker serves shared work (nobody lends to shared), so
// what serves a shared request here is that one worker.
raw.serviceClasses.shared.lendTo = ['heavy']
raw.serviceClasses.premium_shared.lendTo = ['semi_isolated']
raw.serviceClasses.semi_isolated.lendTo = ['premium_shared']
raw.serviceClasses.heavy.lendTo = []
const { server, url } = await start(raw)
t.teardown(() => server.close())
const ADMIN = 'fw_demo_admin'

/** Waits, a turn of the event loop at a time, until `cond` holds; fails after 30 s. */
async function until (cond: () => boolean, what: string): Promise<void> {
  const giveUp = Date.now() + 30_000
  while (!cond()) {
    if (Date.now() > giveUp) throw new Error(`timed out waiting until ${what}`)
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/** Records the unit of every batch a class's pool is given, in order. */
function spyOnPool (t: Test, cls: unknown): { ran: string[] } {
  const pool = (cls as { pool: { run: (task: { unit: string }) => Promise<unknown> } }).pool
  const run = pool.run.bind(pool)
  const log = { ran: [] as string[] }
  pool.run = async (task) => { log.ran.push(task.unit); return await run(task) }
  t.teardown(() => { pool.run = run })
  return log
}

t.test('a busy class borrows an idle class\'s worker; results stay correct', async (t) => {
  const heavy = server.schedulers.get('heavy')
  const shared = server.schedulers.get('shared')
  const wayne = server.schedulers.get('dedicated-wayne')
  if (heavy === undefined || shared === undefined || wayne === undefined) throw new Error('classes missing')
  const x = sampleInput(128, 8, 21)
  const want = referenceForward(specFor('heavy-encoder', '1'), x, 8)
  // Four 8-row batches at once: heavy's own worker takes one, the rest wait,
  // and shared's idle worker takes the next.
  const replies = await Promise.all(Array.from({ length: 4 }, () => call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body: inferBody('input', 8, 128, x) })))
  t.same(replies.map((r) => r.status), [200, 200, 200, 200])
  for (const r of replies) {
    const got: number[] = r.json.outputs[0].data
    t.ok(got.every((v, i) => Math.abs(v - (want[i] as number)) < 1e-4 + 1e-3 * Math.abs(want[i] as number)), 'output matches the reference wherever it ran')
  }
  t.ok(heavy.stats.borrowedBatches >= 1, `heavy ran ${heavy.stats.borrowedBatches} batch(es) on borrowed workers`)
  t.ok(shared.stats.lentBusyMs > 0, `shared lent ${shared.stats.lentBusyMs.toFixed(1)} ms of worker time`)
  t.equal(wayne.stats.lentBusyMs, 0, 'the dedicated class lends to nobody')
  // Shared, having lent its worker, still serves its own tenants.
  const own = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, body: inferBody('input', 1, 64, sampleInput(64, 1, 1)) })
  t.equal(own.status, 200)
})

t.test('own work takes a lent worker back at the next batch, ahead of the borrower\'s queue', async (t) => {
  const heavy = server.schedulers.get('heavy')
  const shared = server.schedulers.get('shared')
  if (heavy === undefined || shared === undefined) throw new Error('classes missing')
  // What shared's pool runs, in order: the unit of every batch it is given.
  const log = spyOnPool(t, shared)
  const x = sampleInput(128, 8, 5)
  const input = sampleInput(64, 1, 9)
  // The premise, made a fact by gates around both real pools: heavy's own
  // worker and shared's lent worker each hold their first batch's result, so
  // shared's own request is queued while its only worker is out on loan and
  // four heavy batches still wait (lending tests are torn down LIFO: the
  // gates come off before the spy).
  const heavyHold = holdFirstBatch(t, heavy)
  const sharedHold = holdFirstBatch(t, shared)
  const before = heavy.stats.borrowedBatches
  // Six 8-row heavy batches: heavy's worker takes one, shared's idle worker
  // a second, four stay queued in heavy.
  const heavyReplies = Array.from({ length: 6 }, async () => await call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body: inferBody('input', 8, 128, x) }))
  await until(() => heavyHold.ran === 1 && sharedHold.ran === 1 && heavy.queued === 4, 'both workers hold a heavy batch and four wait')
  const ownReply = call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, body: inferBody('input', 1, 64, input) })
  await until(() => shared.queued === 1, 'the own request is queued')
  t.equal(heavy.stats.borrowedBatches - before, 1, 'premise: shared\'s worker is out on loan with one heavy batch')
  t.equal(heavy.queued, 4, 'premise: heavy is backlogged')
  sharedHold.release()
  const own = await ownReply
  t.equal(own.status, 200)
  const want = referenceForward(specFor('tiny-classifier', '1'), input, 1)
  t.ok((own.json.outputs[0].data as number[]).every((v, i) => Math.abs(v - (want[i] as number)) < 1e-5), 'own result matches the reference')
  t.same(log.ran.slice(0, 2).map((u) => u.split('@')[0]), ['heavy-encoder', 'tiny-classifier'], 'shared\'s worker ran its own request right after the lent batch, ahead of heavy\'s four')
  heavyHold.release()
  const rest = await Promise.all(heavyReplies)
  t.same(rest.map((r) => r.status), [200, 200, 200, 200, 200, 200])
  t.ok(heavy.stats.borrowedBatches - before > 1, `then lent it again while heavy had work (${heavy.stats.borrowedBatches - before} lent batches; shared ran: ${log.ran.slice(2).join(', ')})`)
})

t.test('a part-filled batch is not lent: it waits for the borrower\'s own worker', async (t) => {
  const heavy = server.schedulers.get('heavy')
  const shared = server.schedulers.get('shared')
  if (heavy === undefined || shared === undefined) throw new Error('classes missing')
  const log = spyOnPool(t, shared)
  // heavy-encoder batches hold 8 rows. An 8-row request occupies heavy's own
  // worker; a 4-row one then queues behind it: half a batch, so shared's idle
  // worker must leave it alone. The full batch's result is held back (a gate
  // around heavy's real pool) until the half batch has been queued and the
  // lender poked: watching for a transient busy worker instead lost the race
  // on a loaded CI machine, where the whole batch ran between two looks.
  const hold = holdFirstBatch(t, heavy)
  const full = call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body: inferBody('input', 8, 128, sampleInput(128, 8, 31)) })
  await until(() => hold.ran === 1, 'heavy\'s worker ran the full batch')
  const x = sampleInput(128, 4, 32)
  const half = call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body: inferBody('input', 4, 128, x) })
  await until(() => heavy.queued === 1, 'the half batch is queued')
  t.equal(heavy.busyWorkers, 1, 'premise: the half batch queued while heavy\'s only worker was busy')
  // Give shared's pump, poked because heavy is saturated, time to run (and,
  // were the rule broken, to take the half batch) before heavy's worker frees.
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(log.ran, [], 'shared\'s idle worker left the half batch alone')
  t.equal(heavy.queued, 1, 'the half batch still waits for heavy\'s own worker')
  hold.release()
  const [a, b] = await Promise.all([full, half])
  t.same([a.status, b.status], [200, 200])
  const want = referenceForward(specFor('heavy-encoder', '1'), x, 4)
  t.ok((b.json.outputs[0].data as number[]).every((v, i) => Math.abs(v - (want[i] as number)) < 1e-4 + 1e-3 * Math.abs(want[i] as number)), 'half batch output matches the reference')
  t.same(log.ran, [], 'shared\'s idle worker ran nothing: the half batch went to heavy\'s own worker')
  t.equal(hold.ran, 2, 'both batches ran on heavy\'s own pool')
})

t.test('/metrics needs an admin token and reports tenants, reasons and lending', async (t) => {
  t.equal((await call(url, '/metrics')).status, 401)
  const tenant = await call(url, '/metrics', { key: KEYS.acme })
  t.equal(tenant.status, 403, 'a tenant key cannot read other tenants\' numbers')
  t.equal(tenant.json.code, 'FW_ERR_AUTH_ADMIN_REQUIRED')
  const m = await call(url, '/metrics', { key: ADMIN })
  t.equal(m.status, 200)
  const text = String(m.json)
  t.match(text, /fairway_tenant_admitted_total\{tenant="acme",tier="premium_shared"\} [1-9]/)
  t.match(text, /fairway_tenant_rejected_total\{tenant="globex",reason="tenant_rate"\} 0/)
  const lent = Number(/fairway_class_lent_busy_seconds_total\{class="shared"\} ([0-9.e-]+)/.exec(text)?.[1])
  t.ok(lent > 0, `shared reports the worker time it lent (${lent} s)`)
  const idle = Number(/fairway_class_idle_seconds_total\{class="dedicated-wayne"\} ([0-9.e-]+)/.exec(text)?.[1])
  t.ok(idle > 0, `an idle dedicated class reports idle reserved capacity (${idle} s)`)
  t.equal((await call(url, '/v2/models/tiny-classifier', { key: ADMIN })).status, 401, 'an admin token is not a tenant key')
})
