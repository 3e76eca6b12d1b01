// Work-conserving lending between classes, and the operator metrics that
// report it: idle reserved capacity serves a busy class, a dedicated class
// lends to nobody, and /metrics is for operators only.

import t from 'tap'
import { call, demoRaw, inferBody, KEYS, start } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'

const raw = demoRaw()
// The shared class lends its idle worker to the heavy class.
raw.serviceClasses.shared.lendTo = ['heavy']
const { server, url } = await start(raw)
t.teardown(() => server.close())
const ADMIN = 'fw_demo_admin'

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
  t.match(text, /fairway_class_lent_busy_seconds_total\{class="shared"\} 0\.0*[1-9]/)
  const idle = Number(/fairway_class_idle_seconds_total\{class="dedicated-wayne"\} ([0-9.e-]+)/.exec(text)?.[1])
  t.ok(idle > 0, `an idle dedicated class reports idle reserved capacity (${idle} s)`)
  t.equal((await call(url, '/v2/models/tiny-classifier', { key: ADMIN })).status, 401, 'an admin token is not a tenant key')
})
