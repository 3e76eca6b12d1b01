// The gateway's cost events, end to end into embedded ClickHouse (chDB): one
// event per answered request of a known tenant (served, refused, bad body),
// over HTTP and WebSocket, priced by the table in the config, and the hourly
// rollup agreeing with the raw events. One server (one chDB directory) per
// process, as libchdb requires.

import t from 'tap'
import WebSocket from 'ws'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { call, demoRaw, inferBody, KEYS, start } from './helpers/server.js'
import { sampleInput } from './helpers/reference.js'

// Our own directory (not t.testdir): it must outlive the server's close.
const dir = mkdtempSync(join(tmpdir(), 'fairway-cost-'))
const raw = demoRaw()
raw.cost = { enabled: true, dataDir: join(dir, 'chdb'), spoolDir: join(dir, 'spool'), flushMs: 50 }
// One request per 100 s: the refusals below cannot turn into refills however
// slowly a loaded machine sends them.
raw.tenants.initech.limits.ratePerSecond = 0.01
raw.tenants.initech.limits.burst = 1
const { server, url } = await start(raw)
t.teardown(async () => {
  await server.close()
  rmSync(dir, { recursive: true, force: true })
})
const cost = server.cost
if (cost === null) throw new Error('cost pipeline not started')
const rows = async (sql: string): Promise<Array<Record<string, any>>> => (await cost.query(sql)).trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))

t.test('every answered request of a known tenant is one priced event', async (t) => {
  const body = inferBody('input', 2, 64, sampleInput(64, 2, 1))
  const sent: Record<string, number> = { acme: 0, initech: 0, globex: 0 }
  for (let i = 0; i < 20; i++) { t.equal((await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.acme, body })).status, 200); sent.acme++ }
  // initech: 1 served, then refused by its rate.
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) { statuses.push((await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.initech, body })).status); sent.initech++ }
  t.same(statuses, [200, 429, 429, 429, 429])
  // globex: a bad body after admission, and a served request over WebSocket.
  t.equal((await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, raw: '{bad', headers: { 'content-type': 'application/json' } })).status, 400); sent.globex++
  // Refused before admission, but the tenant is known: billed as bad requests too.
  t.equal((await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, raw: 'a=1', headers: { 'content-type': 'text/plain' } })).status, 415); sent.globex++
  t.equal((await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, body, headers: { 'x-request-timeout-ms': 'soon' } })).status, 400); sent.globex++
  // A valid input the model overflows on ran, so it carries its compute.
  t.equal((await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.acme, body: inferBody('input', 1, 64, new Array(64).fill(3e38)) })).status, 422); sent.acme++
  const ws = new WebSocket(url.replace('http', 'ws') + '/v2/ws', { headers: { authorization: `Bearer ${KEYS.globex}` } })
  await new Promise((resolve) => ws.once('open', resolve))
  const reply = new Promise<string>((resolve) => ws.once('message', (d: Buffer) => { resolve(d.toString()) }))
  ws.send(JSON.stringify({ id: 'w1', model: 'tiny-classifier', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data: Array.from(sampleInput(64, 1, 2)) }] }))
  t.match(JSON.parse(await reply), { id: 'w1', model_version: '1' })
  ws.close()
  sent.globex++
  // Unauthenticated requests have no tenant to bill and record nothing.
  t.equal((await call(url, '/v2/models/tiny-classifier/infer', { body })).status, 401)

  await cost.flush()
  const counts = await rows('SELECT tenant_id, status, route, count() AS n, sum(rows) AS r FROM cost_events GROUP BY tenant_id, status, route ORDER BY tenant_id, status, route')
  t.same(counts.map((c) => [c.tenant_id, c.status, c.route, Number(c.n)]), [
    ['acme', 'ok', 'http:/v2/models/{m}/infer', 20],
    ['acme', 'output_not_finite', 'http:/v2/models/{m}/infer', 1],
    ['globex', 'bad_request', 'http:/v2/models/{m}/infer', 3],
    ['globex', 'ok', 'ws:/v2/ws', 1],
    ['initech', 'ok', 'http:/v2/models/{m}/infer', 1],
    ['initech', 'tenant_rate', 'http:/v2/models/{m}/infer', 4],
  ])
  t.equal(counts.reduce((s, c) => s + Number(c.n), 0), sent.acme + sent.initech + sent.globex, 'exactly one event per answered request')
  const distinct = await rows('SELECT count() AS n, uniqExact(event_id) AS u FROM cost_events')
  t.equal(Number(distinct[0]?.n), Number(distinct[0]?.u), 'event ids are unique')

  // Prices: fee + compute × class price × tier multiplier, to the 1e-12 USD scale.
  const p = raw.pricing
  const ev = await rows('SELECT tenant_id, tier, model_class, status, compute_seconds, toFloat64(cost_estimate_usd) AS usd, price_version, batch_rows, rows, cost_center, region FROM cost_events')
  for (const e of ev) {
    const want = p.perRequestUsd + e.compute_seconds * p.perComputeSecondUsd[e.model_class] * p.tierMultiplier[e.tier]
    if (Math.abs(e.usd - want) > 1e-11) t.fail(`event of ${e.tenant_id} priced ${e.usd}, table says ${want}`)
    const ran = e.status === 'ok' || e.status === 'output_not_finite'
    if (!ran && e.compute_seconds !== 0) t.fail('a request that did not run has no compute')
    if (ran && !(e.compute_seconds > 0 && e.batch_rows >= e.rows)) t.fail('a request that ran has compute and a batch')
  }
  t.ok(ev.every((e) => e.price_version === p.version), 'events carry the price table version')
  t.ok(ev.filter((e) => e.tenant_id === 'acme').every((e) => e.cost_center === 'cc-acme' && e.region === 'eu-west-1'), 'billing tags from the registry')

  // The hourly rollup agrees with the raw events, per tenant.
  const rollup = await rows('SELECT tenant_id, sum(requests) AS n, sum(rows) AS r, toFloat64(sum(cost_usd)) AS usd FROM cost_hourly GROUP BY tenant_id ORDER BY tenant_id')
  const rawSums = await rows('SELECT tenant_id, count() AS n, sum(rows) AS r, toFloat64(sum(cost_estimate_usd)) AS usd FROM cost_events GROUP BY tenant_id ORDER BY tenant_id')
  t.same(rollup.map((x) => [x.tenant_id, Number(x.n), Number(x.r), x.usd]), rawSums.map((x) => [x.tenant_id, Number(x.n), Number(x.r), x.usd]), 'rollup = raw sums')
})

t.test('admin SQL endpoint: operators only, read-only', async (t) => {
  const q = (key: string | undefined, sql: string) => call(url, '/v2/admin/sql', { key, raw: sql, headers: { 'content-type': 'text/plain' } })
  t.equal((await q(KEYS.acme, 'SELECT 1')).status, 403, 'a tenant key cannot read the cost store')
  const ok = await q('fw_demo_admin', 'SELECT count() AS n FROM cost_events')
  t.equal(ok.status, 200)
  t.ok(Number(ok.json.n) > 0)
  const write = await q('fw_demo_admin', 'DROP TABLE cost_events')
  t.equal(write.status, 400)
  t.equal(write.json.code, 'FW_ERR_COST_QUERY_NOT_READONLY')
})
