// The cost pipeline end to end on embedded ClickHouse (chDB) in a temp
// directory: one pipeline (one data directory) for the whole file, each
// subtest on its own tenants and hours so they do not see each other's rows.

import t from 'tap'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import type { CostEvent } from '../src/cost/cost-event.js'
import { READY_QUERIES, timeRange } from '../src/cost/cost-queries.js'
import { costOf, validatePriceTable, type PriceTable } from '../src/cost/pricing.js'
import { uuidv7 } from '../src/cost/uuidv7.js'

const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-pipeline-'))
const PRICES = validatePriceTable({
  version: '2025-01',
  perComputeSecondUsd: { light: 0.0001, mid: 0.0004, heavy: 0.002 },
  perRequestUsd: 0.000002,
  tierMultiplier: { shared: 1, premium_shared: 1.5, dedicated: 3 },
  nodeCostPerHourUsd: 1.2,
}, '$.pricing').table as PriceTable

const HOUR = 3_600_000
const T0 = Date.parse('2030-01-01T10:00:00Z')
const TIERS = ['shared', 'premium_shared', 'dedicated']
const CLASSES = ['light', 'mid', 'heavy']
const logs: string[] = []
let p: CostPipeline

/** A deterministic, varied event; rejected ones (every 7th) have 0 compute. */
function event (prefix: string, i: number, ts: number): CostEvent {
  const refused = i % 7 === 0
  const tier = TIERS[i % 3] as string
  const modelClass = CLASSES[i % 3] as string
  const rows = 1 + (i % 4)
  const compute = refused ? 0 : (i % 11 + 1) * 0.000013 * rows
  return {
    event_id: uuidv7(), ts_ms: ts, tenant_id: `${prefix}-t${i % 5}`, route: i % 2 === 0 ? 'http:/v2/models/{m}/infer' : 'ws:/v2/models/{m}/infer',
    model_id: `model-${i % 3}`, model_version: String(1 + (i % 2)), variant: 'default', tier, service_class: i % 2 === 0 ? 'shared' : 'premium',
    model_class: modelClass, status: refused ? 'tenant_concurrency' : 'ok', http_status: refused ? 429 : 200,
    queue_wait_ms: refused ? 0 : (i % 97) * 0.5, inference_ms: refused ? 0 : 0.25 + (i % 5) * 0.1, batch_rows: refused ? 0 : 8, rows,
    compute_seconds: compute, cache_hit: i % 13 === 0, fallback: false, degraded: i % 17 === 0,
    cost_estimate_usd: costOf(PRICES, modelClass, tier, compute), price_version: PRICES.version, cost_center: `cc-${i % 2}`,
    region: 'eu-west', node_id: '',
  }
}

/** Emits like a gateway would: in bursts, yielding to the event loop between them. */
async function emitAll (events: CostEvent[]): Promise<void> {
  for (let i = 0; i < events.length; i++) {
    p.emit(events[i] as CostEvent)
    if (i % 2000 === 1999) await new Promise((resolve) => setImmediate(resolve))
  }
}

async function rows<T> (sql: string, params?: Record<string, unknown>): Promise<T[]> {
  const text = await p.query(sql, 'JSONEachRow', params === undefined ? {} : { params })
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as T)
}

t.before(async () => {
  p = await CostPipeline.start({
    backend: { kind: 'embedded', dataDir: join(DIR, 'data') },
    spoolDir: join(DIR, 'spool'),
    batchRows: 4000,
    flushMs: 200,
    nodeId: 'node-test',
    log: (m) => { logs.push(m) },
  })
})

t.teardown(async () => {
  await p?.close()
  rmSync(DIR, { recursive: true, force: true })
})

t.test('schema migrations are recorded in order', async (t) => {
  t.same(await rows<{ version: number, name: string }>('SELECT version, name FROM schema_migrations FINAL ORDER BY version'), [
    { version: 1, name: 'cost_events' }, { version: 2, name: 'cost_hourly' }, { version: 3, name: 'usage_hourly_and_capacity_hours' },
    { version: 4, name: 'cost_events_ordered_by_time' },
  ])
  t.equal(p.stats().schemaVersion, 4)
})

t.test('every emitted event is stored exactly once, field for field', async (t) => {
  const events: CostEvent[] = []
  for (let i = 0; i < 30_000; i++) events.push(event('once', i, T0 + (i % 2) * HOUR + (i % 3_600_000)))
  events[5] = { ...(events[5] as CostEvent), tenant_id: 'once-t0', route: 'tab\there\nand\\more', region: 'zürich ☃', cost_center: "o'brien" }
  const before = p.stats()
  await emitAll(events)
  await p.flush()
  const s = p.stats()
  t.equal(s.emitted - before.emitted, 30_000)
  t.equal(s.inserted - before.inserted, 30_000, 'the sink acknowledged every event')
  t.equal(s.dropped, 0)
  t.equal(s.spooledBatches, 0, 'nothing left in the spool')
  t.same(readdirSync(join(DIR, 'spool')).filter((n) => n.endsWith('.native')), [])
  const [agg] = await rows<{ n: number, u: number }>("SELECT count() AS n, uniqExact(event_id) AS u FROM cost_events WHERE startsWith(tenant_id, 'once-')")
  t.same(agg, { n: 30_000, u: 30_000 })
  const stored = new Set((await p.query("SELECT event_id FROM cost_events WHERE startsWith(tenant_id, 'once-')", 'TabSeparatedWithNames')).trim().split('\n').slice(1))
  t.ok(events.every((e) => stored.has(e.event_id)), 'each emitted id is there')

  const e5 = events[5] as CostEvent
  const [got] = await rows<Record<string, unknown>>(`SELECT * EXCEPT ts FROM cost_events WHERE event_id = '${e5.event_id}'`)
  t.same(got, { ...e5, node_id: 'node-test' }, 'round trip, including escapes and unicode; empty node_id filled')
})

t.test('rollups: per-tenant sums in cost_hourly and usage_hourly equal sums over the raw events', async (t) => {
  const raw = await rows<Record<string, number | string>>(`SELECT tenant_id, count() AS requests, sum(rows) AS rows,
      round(sum(compute_seconds), 9) AS compute, sum(cost_estimate_usd) AS cost, countIf(status = 'ok') AS ok
    FROM cost_events WHERE startsWith(tenant_id, 'once-') GROUP BY tenant_id ORDER BY tenant_id`)
  const hourly = await rows<Record<string, number | string>>(`SELECT tenant_id, sum(requests) AS requests, sum(rows) AS rows,
      round(sum(compute_seconds), 9) AS compute, sum(cost_usd) AS cost, sum(ok_requests) AS ok
    FROM cost_hourly WHERE startsWith(tenant_id, 'once-') GROUP BY tenant_id ORDER BY tenant_id`)
  const usage = await rows<Record<string, number | string>>(`SELECT tenant_id, sum(requests) AS requests, sum(rows) AS rows,
      round(sum(compute_seconds), 9) AS compute, sum(cost_usd) AS cost
    FROM usage_hourly WHERE startsWith(tenant_id, 'once-') GROUP BY tenant_id ORDER BY tenant_id`)
  t.equal(raw.length, 5)
  t.same(hourly, raw, 'cost_hourly == raw (cost is Decimal: exact)')
  t.same(usage, raw.map(({ ok: _ok, ...r }) => r), 'usage_hourly == raw')
  const [q] = await rows<{ rollup: number, exact: number }>(`SELECT
      (SELECT quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(queue_wait_ms_q)[3] FROM cost_hourly WHERE startsWith(tenant_id, 'once-') AND tier = 'shared') AS rollup,
      (SELECT quantileExact(0.95)(queue_wait_ms) FROM cost_events WHERE startsWith(tenant_id, 'once-') AND tier = 'shared') AS exact`)
  t.ok(Math.abs((q?.rollup ?? 0) - (q?.exact ?? 1)) <= 2, `p95 queue wait from the quantile states (${q?.rollup}) ~ exact (${q?.exact})`)
})

t.test('stored costs reconcile to the price table', async (t) => {
  const stored = await rows<{ model_class: string, tier: string, compute_seconds: number, cost_estimate_usd: number, price_version: string }>(
    "SELECT model_class, tier, compute_seconds, cost_estimate_usd, price_version FROM cost_events WHERE startsWith(tenant_id, 'once-')")
  t.equal(stored.length, 30_000)
  const off = stored.filter((r) => r.cost_estimate_usd !== costOf(PRICES, r.model_class, r.tier, r.compute_seconds) || r.price_version !== PRICES.version)
  t.equal(off.length, 0, 'every stored cost is exactly costOf(price table, class, tier, compute)')
  // The same formula in SQL over the raw compute (how a re-pricing would run).
  const [sql] = await rows<{ d: number }>(`SELECT abs(sum(toFloat64(cost_estimate_usd)) - sum(
      ${PRICES.perRequestUsd} + compute_seconds * multiIf(model_class = 'light', 0.0001, model_class = 'mid', 0.0004, 0.002)
        * multiIf(tier = 'shared', 1, tier = 'premium_shared', 1.5, 3))) AS d
    FROM cost_events WHERE startsWith(tenant_id, 'once-')`)
  t.ok((sql?.d ?? 1) < 1e-9, `SQL re-pricing matches (diff ${sql?.d})`)
})

t.test('ready queries run and agree with the raw events', async (t) => {
  const range = timeRange(T0, T0 + 2 * HOUR)
  const byTenant = await rows<{ tenant_id: string, requests: number, cost_usd: number }>(READY_QUERIES.costByTenant, range)
  const once = byTenant.filter((r) => r.tenant_id.startsWith('once-'))
  t.equal(once.reduce((n, r) => n + r.requests, 0), 30_000)
  const perModel = await rows<{ model_id: string, usd_per_1k_inferences: number, inferences: number, cost_usd: number }>(READY_QUERIES.costPer1kByModel, range)
  t.ok(perModel.length >= 3 && perModel.every((r) => Math.abs(r.usd_per_1k_inferences - r.cost_usd * 1000 / r.inferences) < 1e-8))
  const tiers = await rows<{ tier: string, p95_queue_wait_ms: number }>(READY_QUERIES.queueWaitByTier, range)
  t.same(tiers.map((r) => r.tier), ['dedicated', 'premium_shared', 'shared'])
  const routes = await rows<{ route: string, requests: number }>(READY_QUERIES.topRoutes, range)
  t.ok(routes.length >= 2 && (routes[0]?.requests ?? 0) >= (routes[1]?.requests ?? 0))
  const table = await p.query(READY_QUERIES.costByTenant, 'PrettyCompact', { params: range, readonly: true })
  t.match(table, /tenant_id.*requests.*cost_usd/)
})

t.test('idle capacity split: attributed + idle = node cost, split in proportion to use', async (t) => {
  const H = Date.parse('2030-02-01T00:00:00Z')
  const events: CostEvent[] = []
  // Two tenants share pool "shared" in hour 0 (3:1 compute); only tenant b uses "premium" in hour 1.
  for (let i = 0; i < 400; i++) {
    events.push({ ...event('idle', i, H + i), tenant_id: 'idle-a', service_class: 'shared', compute_seconds: 0.3 })
    if (i < 133) events.push({ ...event('idle', i, H + i), tenant_id: 'idle-b', service_class: 'shared', compute_seconds: 0.3 })
    events.push({ ...event('idle', i, H + HOUR + i), tenant_id: 'idle-b', service_class: 'premium', compute_seconds: 1 })
  }
  await emitAll(events)
  await p.recordCapacity([
    { hour_ms: H, pool: 'shared', capacity_seconds: 4 * 3600, node_cost_usd: 5 }, // superseded below
    { hour_ms: H + HOUR, pool: 'premium', capacity_seconds: 2 * 3600, node_cost_usd: 0.6 },
    { hour_ms: H + 2 * HOUR, pool: 'shared', capacity_seconds: 4 * 3600, node_cost_usd: 0.6 }, // nobody used it
  ])
  await p.recordCapacity([{ hour_ms: H + 1234, pool: 'shared', capacity_seconds: 4 * 3600, node_cost_usd: 0.6 }])
  await p.flush()
  const split = await rows<{ tenant_id: string, attributed_usd: number, idle_share_usd: number, total_usd: number }>(READY_QUERIES.idleSplit, timeRange(H, H + 3 * HOUR))
  const by = Object.fromEntries(split.map((r) => [r.tenant_id, r]))
  t.same(Object.keys(by).sort(), ['(unused)', 'idle-a', 'idle-b'])
  const total = split.reduce((n, r) => n + r.total_usd, 0)
  t.ok(Math.abs(total - 1.8) < 1e-9, `attributed + idle over all tenants = node cost of the 3 pool-hours (${total})`)
  for (const r of split) t.ok(Math.abs(r.attributed_usd + r.idle_share_usd - r.total_usd) < 1e-12, `${r.tenant_id}: attributed + idle = total`)
  // Hour 0, shared: used 120 + 39.9 s of 14 400 s; a gets 120/159.9 of 0.6.
  const usedA = 400 * 0.3
  const usedB = 133 * 0.3
  t.ok(Math.abs((by['idle-a']?.attributed_usd ?? 0) - 0.6 * usedA / 14_400) < 1e-12, 'attributed = node cost x used / capacity')
  t.ok(Math.abs((by['idle-a']?.total_usd ?? 0) - 0.6 * usedA / (usedA + usedB)) < 1e-12, 'total = node cost x share of use')
  t.ok(Math.abs((by['idle-b']?.total_usd ?? 0) - (0.6 * usedB / (usedA + usedB) + 0.6)) < 1e-12, 'b also carries all of premium hour 1')
  t.ok(Math.abs((by['(unused)']?.total_usd ?? 0) - 0.6) < 1e-12, 'an unused pool-hour stays unattributed')
})

t.test('read-only queries: one reading statement, enforced by ClickHouse', async (t) => {
  const ro = { readonly: true }
  await t.rejects(p.query('DROP TABLE cost_events', 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  await t.rejects(p.query('INSERT INTO capacity_hours SELECT * FROM capacity_hours', 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  await t.rejects(p.query('SELECT 1; DROP TABLE cost_events', 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  await t.rejects(p.query("SELECT * FROM file('/etc/hostname', 'LineAsString')", 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  await t.rejects(p.query("SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString') SETTINGS readonly = 0)", 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' }, 'a subquery cannot lift readonly')
  await t.rejects(p.query('SELEC 1', 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  // INTO OUTFILE runs client-side, where readonly = 1 does not reach: embedded chDB wrote the file.
  const outfile = join(mkdtempSync(join(tmpdir(), 'fw-outfile-')), 'x.txt')
  for (const q of [`SELECT 1 INTO OUTFILE '${outfile}'`, `select 1 into   outfile '${outfile}' TRUNCATE`, `SELECT 1 INTO OUTFILE '${outfile}' APPEND FORMAT CSV`]) {
    await t.rejects(p.query(q, 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' }, q)
  }
  t.notOk(existsSync(outfile), 'and no file was written')
  await t.rejects(p.query('SELECT 1 FORMAT JSON', 'JSONEachRow', ro), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' }, 'a FORMAT clause would override the asked format')
  t.equal(await p.query("SELECT formatDateTime(toDateTime('2030-01-01 00:00:00', 'UTC'), '%Y') AS y", 'JSONEachRow', ro), '{"y":"2030"}\n', 'functions named format… are fine')
  t.equal(await p.query("SELECT 'FORMAT Native' AS s, 'it\\'s FORMAT CSV' AS t", 'JSONEachRow', ro), '{"s":"FORMAT Native","t":"it\'s FORMAT CSV"}\n', 'and so are the words inside a string')
  t.equal(await p.query('SELECT 1 AS x SETTINGS max_threads = 1 -- comment', 'JSONEachRow', ro), '{"x":1}\n')
  t.equal(await p.query('SELECT {n:UInt8} + 1 AS x', 'CSVWithNames', { readonly: true, params: { n: 41 } }), '"x"\n42\n')
  t.equal(await p.query('SELECT 1 AS x, \'a\' AS y', 'TabSeparatedWithNames', ro), 'x\ty\n1\ta\n')
  t.match(await p.query('SHOW TABLES', 'TabSeparatedWithNames', ro), /cost_events/)
  t.match(await p.query('SELECT count() AS n FROM cost_events', 'PrettyCompact', ro), /┌─+n─┐/)
  await t.rejects(p.query('SELECT nope FROM cost_events', 'JSONEachRow'), { code: 'FW_ERR_COST_QUERY_FAILED' })
  t.ok((await rows<{ n: number }>('SELECT count() AS n FROM cost_events'))[0]?.n ?? 0 > 0, 'the store is intact')
  // Settings of a read-only query do not stick to the embedded session: a write still works.
  t.equal(await p.query('CREATE TABLE IF NOT EXISTS scratch (a UInt8) ENGINE = Memory'), '')
})

t.test('emit never throws: junk is counted, malformed ids are replaced', async (t) => {
  const s0 = p.stats()
  t.doesNotThrow(() => { p.emit(null as unknown as CostEvent) })
  t.doesNotThrow(() => { p.emit({ tenant_id: 'junk-t', event_id: 'nope' } as unknown as CostEvent) })
  await p.flush()
  const s = p.stats()
  t.equal(s.droppedInvalid - s0.droppedInvalid, 1, 'null is dropped and counted')
  t.equal(s.invalidEventIds - s0.invalidEventIds, 1, 'a bad id is counted and replaced')
  const [r] = await rows<Record<string, unknown>>("SELECT rows, cost_estimate_usd, status, ts_ms FROM cost_events WHERE tenant_id = 'junk-t'")
  t.same(r, { rows: 0, cost_estimate_usd: 0, status: '', ts_ms: 0 }, 'missing fields become their column defaults')
  t.match(logs.join('\n'), /DROPPING cost events/, 'the drop was logged')
})

t.test('a page waits in the ring until flushMs after its first event, then is spooled without a flush', async (t) => {
  await p.flush()
  // Let any flush period an earlier test's emits opened run out (its timer
  // was armed before this sleep's, so it fires first): these emits then
  // start a period of their own.
  await new Promise((resolve) => setTimeout(resolve, 250))
  const s0 = p.stats()
  t.equal(s0.ringDepth, 0)
  p.emit(event('drain', 1, T0 + 5 * HOUR))
  p.emit(event('drain', 2, T0 + 5 * HOUR))
  // Half of flushMs (200) later the page is still here: no hand-over (and
  // no sink wake-up) before its deadline. The sleep's timer expires first,
  // so it runs first even if the loop is late.
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(p.stats().ringDepth, 2, 'not handed to the sink before flushMs')
  // Then the ring hands it over and the sink spools it at once, unasked.
  while (p.stats().spooledRows - s0.spooledRows < 2 && p.stats().inserted - s0.inserted < 2) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(p.stats().ringDepth, 0, 'taken by the sink')
  await p.flush()
  t.same(await rows("SELECT count() AS n FROM cost_events WHERE tenant_id LIKE 'drain-%'"), [{ n: 2 }])
})

// Spooled by the period's bare cut message, or failing that by the sink's
// backstop timer a quarter of flushMs later: this test does not tell which.
t.test('a period that ends on a full page (empty open page) is still spooled unasked', async (t) => {
  await p.flush()
  const s0 = p.stats()
  const full = 1024 // the ring's page capacity at the default ringCapacity
  for (let i = 0; i < full; i++) p.emit(event('fullpage', i, T0 + 6 * HOUR))
  while (p.stats().spooledRows - s0.spooledRows < full && p.stats().inserted - s0.inserted < full) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(p.stats().ringDepth, 0, 'nothing left in the ring')
  await p.flush()
  t.same(await rows("SELECT count() AS n FROM cost_events WHERE tenant_id LIKE 'fullpage-%'"), [{ n: full }])
})

t.test('emits after close are dropped loudly; the pipeline answers FW_ERR_COST_CLOSED', async (t) => {
  const s0 = p.stats()
  await p.close()
  p.emit(event('late', 1, T0))
  t.equal(p.stats().droppedAfterClose - s0.droppedAfterClose, 1)
  await t.rejects(p.flush(), { code: 'FW_ERR_COST_CLOSED' })
  await t.rejects(p.query('SELECT 1'), { code: 'FW_ERR_COST_CLOSED' })
  t.equal(p.stats().sinkAlive, false)
  t.same(readdirSync(join(DIR, 'spool')).filter((n) => n !== 'dead'), [], 'spool empty and unlocked')
})
