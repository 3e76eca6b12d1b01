// Every admission refusal over real HTTP: status, stable code, machine-readable
// reason in body and header, Retry-After, and the per-tenant reason counters.

import t, { type Test } from 'tap'
import { Reject } from '../src/admission/admission-table.js'
import { call, demoRaw, holdFirstBatch, inferBody, KEYS, start } from './helpers/server.js'
import { sampleInput } from './helpers/reference.js'

const raw = demoRaw()
// One request per 100 s: the bucket cannot refill between the test's requests
// however slowly a loaded machine sends them.
raw.tenants.initech.limits.ratePerSecond = 0.01
raw.tenants.initech.limits.burst = 2
raw.tenants.globex.limits.queueDepth = 1
raw.serviceClasses.semi_isolated.maxQueued = 1
const { server, url } = await start(raw)
t.teardown(() => server.close())
const body = inferBody('input', 1, 64, sampleInput(64, 1, 3))
const infer = (key: string, extra: Parameters<typeof call>[2] = {}) => call(url, '/v2/models/tiny-classifier/infer', { key, body, ...extra })
const slot = (id: string): number => server.registry.tenantById(id)?.slot ?? -1
const cls = (id: string): number => server.registry.classSlots.get(id) ?? -1

function refused (t: Test, r: Awaited<ReturnType<typeof call>>, status: number, code: string, reason: string): void {
  t.equal(r.status, status, `${reason}: status ${status}`)
  t.equal(r.json.code, code)
  t.equal(r.json.reason, reason, 'reason in the body')
  t.equal(r.headers.get('x-fairway-reject-reason'), reason, 'reason in a header')
  t.ok(Number(r.headers.get('retry-after')) >= 1, 'Retry-After in whole seconds')
  t.ok(r.json.retry_after_ms >= 1, 'retry hint in ms')
}

t.test('tenant_rate: over the rate after the burst', async (t) => {
  const t0 = Date.now()
  t.equal((await infer(KEYS.initech)).status, 200)
  t.equal((await infer(KEYS.initech)).status, 200)
  const r = await infer(KEYS.initech)
  refused(t, r, 429, 'FW_ERR_ADMISSION_TENANT_RATE', 'tenant_rate')
  // The next token is due 100 s after the burst was spent, less the time
  // the three requests took.
  const elapsed = Date.now() - t0
  t.ok(r.json.retry_after_ms >= 100_000 - elapsed - 1 && r.json.retry_after_ms <= 100_000, `retry derived from the bucket (${r.json.retry_after_ms} ms at 0.01 req/s, ${elapsed} ms after the burst began)`)
  t.equal(r.headers.get('retry-after'), String(Math.ceil(r.json.retry_after_ms / 1000)), 'Retry-After is the hint in whole seconds, rounded up')
  t.equal(server.admission.rejected(slot('initech'), Reject.TenantRate), 1)
})

t.test('tenant_queue_full: queue depth reached', async (t) => {
  // Hold globex's one queue place the way a concurrent request would.
  t.equal(server.admission.admit(slot('globex'), cls('shared'), server.admission.nowUs()), Reject.None)
  refused(t, await infer(KEYS.globex), 429, 'FW_ERR_ADMISSION_TENANT_QUEUE_FULL', 'tenant_queue_full')
  server.admission.dequeued(slot('globex'), cls('shared'))
  server.admission.release(slot('globex'))
  t.equal((await infer(KEYS.globex)).status, 200, 'served again once the queue drains')
})

t.test('class_overloaded: the class sheds above its queued threshold', async (t) => {
  t.equal(server.admission.admit(slot('umbrella'), cls('semi_isolated'), server.admission.nowUs()), Reject.None)
  refused(t, await infer(KEYS.umbrella), 503, 'FW_ERR_ADMISSION_CLASS_OVERLOADED', 'class_overloaded')
  server.admission.dequeued(slot('umbrella'), cls('semi_isolated'))
  server.admission.release(slot('umbrella'))
  t.equal(server.admission.rejected(slot('umbrella'), Reject.ClassOverloaded), 1)
})

t.test('deadline_exceeded: a queued request whose budget ends is answered 504 and never run', async (t) => {
  const heavy = server.schedulers.get('heavy')
  if (heavy === undefined) throw new Error('no heavy class')
  const hbody = inferBody('input', 8, 128, sampleInput(128, 8, 2))
  // Heavy's first batch is held back (a gate around heavy's real pool) until
  // the late request has been answered: "the worker is busy" is then a fact,
  // not a hope about timing.
  const hold = holdFirstBatch(t, heavy)
  const rowsBefore = heavy.stats.rows
  const busy = Array.from({ length: 6 }, () => call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body: hbody }))
  const giveUp = Date.now() + 30_000
  while (hold.ran === 0 || heavy.queued < 5) {
    if (Date.now() > giveUp) throw new Error('the busy batches never queued')
    await new Promise((r) => setImmediate(r))
  }
  const late = await call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body: inferBody('input', 1, 128, sampleInput(128, 1, 4)), headers: { 'x-request-timeout-ms': '2' } })
  hold.release()
  t.equal(late.status, 504)
  t.equal(late.json.code, 'FW_ERR_DEADLINE_EXCEEDED')
  t.equal(late.json.reason, 'deadline_exceeded')
  t.equal(late.headers.get('x-fairway-reject-reason'), 'deadline_exceeded')
  t.ok(Number(late.json.retry_after_ms) >= 1, 'a retry hint in the body')
  t.ok(Number(late.headers.get('retry-after')) >= 1, 'and Retry-After')
  const done = await Promise.all(busy)
  t.same(done.map((r) => r.status), [200, 200, 200, 200, 200, 200])
  t.equal(heavy.stats.expired, 1)
  t.equal((heavy.stats.rows - rowsBefore) % 8, 0, 'the expired 1-row request never ran (only 8-row batches did)')
  t.equal(server.admission.rejected(slot('acme'), Reject.DeadlineExceeded), 1)
})

t.test('every counter is back to zero', async (t) => {
  for (const tn of server.registry.tenants) {
    t.equal(server.admission.inflight(tn.slot), 0, `${tn.config.id} in flight`)
    t.equal(server.admission.queued(tn.slot), 0, `${tn.config.id} queued`)
  }
  for (const [id, s] of server.registry.classSlots) t.equal(server.admission.classQueued(s), 0, `class ${id} queued`)
})
