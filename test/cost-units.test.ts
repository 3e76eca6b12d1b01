// Cost pipeline parts that need no cost store: the price table and formula,
// UUIDv7, the ring -> page -> Native block path (read back by ClickHouse's
// own Native reader, stateless chdb), the read-only rewrite, backoff, the
// spool's file protocol and capacity records.

import t, { type Test } from 'tap'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { query as chdbQuery } from 'chdb'
import { encodeCapacity, tsvEscape } from '../src/cost/capacity-record.js'
import { readonlySql, isPermanentInsertError } from '../src/cost/clickhouse-backend.js'
import { backoffDelay } from '../src/cost/backoff.js'
import { CostError } from '../src/cost/cost-error.js'
import { COST_EVENT_COLUMNS, type CostEvent } from '../src/cost/cost-event.js'
import { dayRange } from '../src/cost/cost-queries.js'
import type { PageMessage } from '../src/cost/event-page.js'
import { EventRing } from '../src/cost/event-ring.js'
import { NativeBatchEncoder } from '../src/cost/native-batch.js'
import { readNativeColumns } from '../src/cost/native-format.js'
import { checkPriceCoverage, costOf, poolCostPerHour, roundUsd, validatePriceTable, type PriceTable } from '../src/cost/pricing.js'
import { Spool, listSpool, parseSpoolName, readSpoolColumns } from '../src/cost/spool.js'
import { isUuid, uuidv7, uuidv7Time } from '../src/cost/uuidv7.js'

const RAW_PRICES = {
  version: '2025-01',
  perComputeSecondUsd: { light: 0.0001, mid: 0.0004, heavy: 0.002 },
  perRequestUsd: 0.000002,
  tierMultiplier: { shared: 1, premium_shared: 1.5, semi_isolated: 2, dedicated: 3 },
  nodeCostPerHourUsd: 1.2,
}

function prices (): PriceTable {
  const { table } = validatePriceTable(RAW_PRICES, '$.pricing')
  if (table === null) throw new Error('demo prices invalid')
  return table
}

function event (i: number, over: Partial<CostEvent> = {}): CostEvent {
  return {
    event_id: uuidv7(), ts_ms: 1_893_456_000_000 + i, tenant_id: `tenant-${i % 3}`, route: 'http:/v2/models/{m}/infer',
    model_id: 'tiny-classifier', model_version: '1', variant: 'default', tier: 'shared', service_class: 'shared', model_class: 'light',
    status: 'ok', http_status: 200, queue_wait_ms: 1.25, inference_ms: 0.5, batch_rows: 8, rows: 2, compute_seconds: 0.00001,
    cache_hit: false, fallback: true, degraded: false, cost_estimate_usd: 0.000003, price_version: '2025-01', cost_center: 'cc-1',
    region: 'eu-west', node_id: 'node-a', ...over,
  }
}

t.test('validatePriceTable accepts a good table and reports every problem with its path', async (t) => {
  const ok = validatePriceTable(RAW_PRICES, '$.pricing')
  t.same(ok.problems, [])
  t.equal(ok.table?.version, '2025-01')
  t.ok(Object.isFrozen(ok.table), 'the table is frozen')

  const bad = validatePriceTable({
    version: '',
    perComputeSecondUsd: { light: -1, mid: 'x' },
    perRequestUsd: Number.NaN,
    tierMultiplier: [],
    colour: 'blue',
  }, '$.pricing')
  t.equal(bad.table, null)
  const paths = bad.problems.map((p) => p.path).sort()
  t.same(paths, [
    '$.pricing.colour', '$.pricing.nodeCostPerHourUsd', '$.pricing.perComputeSecondUsd.light', '$.pricing.perComputeSecondUsd.mid',
    '$.pricing.perRequestUsd', '$.pricing.tierMultiplier', '$.pricing.version',
  ])
  t.same(validatePriceTable('nope', '$.pricing').problems, [{ path: '$.pricing', message: 'must be an object' }])
  t.match(validatePriceTable({ ...RAW_PRICES, perComputeSecondUsd: {} }, '$.p').problems, [{ path: '$.p.perComputeSecondUsd', message: /at least one/ }])
})

t.test('costOf: per-request fee + compute x class price x tier multiplier, rounded to 1e-12', async (t) => {
  const p = prices()
  t.equal(costOf(p, 'light', 'shared', 0.01), 0.000002 + 0.01 * 0.0001)
  t.equal(costOf(p, 'heavy', 'dedicated', 2), 0.000002 + 2 * 0.002 * 3)
  t.equal(costOf(p, 'mid', 'premium_shared', 0), 0.000002, 'a refused request (0 compute) pays the fee only')
  t.equal(costOf(p, 'light', 'shared', Number.NaN), 0.000002, 'NaN compute is 0')
  t.equal(costOf(p, 'light', 'shared', -5), 0.000002, 'negative compute is 0')
  t.equal(costOf(p, 'unknown', 'shared', 1), 0.000002, 'an unpriced class costs 0 per second (coverage check reports it)')
  t.equal(costOf(p, 'light', 'gold', 1), 0.000002 + 0.0001, 'an unknown tier multiplies by 1')
  const withStar = validatePriceTable({ ...RAW_PRICES, perComputeSecondUsd: { '*': 0.5 }, tierMultiplier: { '*': 2 } }, '$').table as PriceTable
  t.equal(costOf(withStar, 'anything', 'any', 1), 0.000002 + 1)
  const c = costOf(p, 'light', 'shared', 0.123456789)
  t.equal(c, Math.round(c * 1e12) / 1e12, 'rounded to the stored scale')
  t.equal(c.toFixed(12), '0.000014345679')
  t.equal(poolCostPerHour(p, 2, 8), 0.3)
  t.equal(poolCostPerHour(p, 16, 8), 1.2, 'a pool never costs more than the node')
})

t.test('checkPriceCoverage names unpriced classes and tiers', async (t) => {
  const p = prices()
  t.same(checkPriceCoverage(p, ['light', 'mid', 'huge'], ['shared', 'platinum'], '$.pricing'), [
    { path: '$.pricing.perComputeSecondUsd', message: 'has no price for model class huge' },
    { path: '$.pricing.tierMultiplier', message: 'has no multiplier for tier platinum' },
  ])
  const star = validatePriceTable({ ...RAW_PRICES, perComputeSecondUsd: { '*': 1 }, tierMultiplier: {} }, '$').table as PriceTable
  t.same(checkPriceCoverage(star, ['huge'], ['platinum'], '$'), [])
})

t.test('uuidv7: valid, version 7, time-ordered and unique', async (t) => {
  const now = Date.now()
  const ids: string[] = []
  for (let i = 0; i < 20_000; i++) ids.push(uuidv7(now))
  t.ok(ids.every(isUuid))
  t.ok(ids.every((id) => id[14] === '7' && '89ab'.includes(id[19] as string)), 'version and variant bits')
  t.equal(new Set(ids).size, ids.length, 'unique')
  t.same([...ids].sort(), ids, 'monotonic even within one millisecond')
  t.ok(uuidv7Time(ids[0] as string) >= now && uuidv7Time(ids.at(-1) as string) <= now + 10, 'carries the ms timestamp (counter overflow borrows a ms)')
  const later = uuidv7(now - 60_000)
  t.ok(later > (ids.at(-1) as string), 'a clock step back does not break the order')
  t.ok(Number.isNaN(uuidv7Time('not-a-uuid')))
})

/** Encodes the pages as one batch, writes it as a Native file and has ClickHouse read it back, one object per row. */
function roundTrip (t: Test, pages: PageMessage[], enc = new NativeBatchEncoder()): Array<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'fairway-native-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const p of pages) enc.add(p, 16)
  const file = join(dir, 'batch.native')
  writeFileSync(file, Buffer.concat(enc.finish()))
  const out = chdbQuery(`SELECT * FROM file('${file}', 'Native') SETTINGS output_format_json_quote_64bit_integers = 0`, 'JSONEachRow')
  return out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('ring pages carry events into a Native block ClickHouse reads back exactly, junk clamped', async (t) => {
  const pages: PageMessage[] = []
  const ring = new EventRing(64, (m) => { pages.push(m) })
  t.equal(ring.pageCapacity, 16)
  t.equal(ring.capacity, 64)
  const weird = event(1, { tenant_id: 'tab\there', route: 'line\nbreak\\slash', region: 'zürich ☃', model_version: "it's" })
  const junk = event(2, { event_id: 'not-a-uuid', http_status: 99_999, queue_wait_ms: Number.NaN, inference_ms: Infinity, cost_estimate_usd: 5e6, rows: -3, node_id: '' })
  const big = event(3, { cost_estimate_usd: -12_345.678901234567, ts_ms: -5 })
  t.ok(ring.push(weird, 'default-node'))
  t.ok(ring.push(junk, 'default-node'))
  t.ok(ring.push(big, 'default-node'))
  t.equal(ring.depth, 3)
  ring.flushPage()
  t.equal(pages.length, 1)
  const enc = new NativeBatchEncoder()
  const [a, b, c] = roundTrip(t, pages, enc) as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>]
  t.same(Object.keys(a), [...COST_EVENT_COLUMNS], 'columns in COST_EVENT_COLUMNS order')
  t.equal(a.event_id, weird.event_id)
  t.equal(a.tenant_id, 'tab\there')
  t.equal(a.route, 'line\nbreak\\slash')
  t.equal(a.region, 'zürich ☃')
  t.equal(a.model_version, "it's")
  t.equal(a.ts_ms, weird.ts_ms)
  t.equal(a.fallback, true)
  t.equal(a.cache_hit, false)
  t.equal(a.cost_estimate_usd, 0.000003)
  t.equal(a.node_id, 'node-a')
  t.ok(isUuid(b.event_id as string) && b.event_id !== 'not-a-uuid', 'a malformed id is replaced')
  t.equal(enc.invalidIds, 1)
  t.equal(b.http_status, 0, 'http status out of UInt16 range')
  t.equal(b.queue_wait_ms, 0)
  t.equal(b.inference_ms, 0)
  t.equal(b.cost_estimate_usd, 999999, 'clamped into Decimal(18, 12)')
  t.equal(b.rows, 0)
  t.equal(b.node_id, 'default-node', "the pipeline's node id fills an empty one")
  t.equal(c.cost_estimate_usd, -12345.678901234567, 'past 2^53 micro-micro-dollars: exact 12-place decimal')
  t.equal(c.ts_ms, -5, 'negative Int64')
  t.equal(tsvEscape('a\tb\nc\rd\\e\0f'), 'a\\tb\\nc\\rd\\\\e\\0f')
})

t.test('numbers survive the Native block exactly, across pages and column growth', async (t) => {
  const pages: PageMessage[] = []
  const ring = new EventRing(1 << 16, (m) => { pages.push(m) })
  const events: CostEvent[] = []
  let seed = 7
  const rnd = (): number => { seed = (seed * 16807) % 2147483647; return seed / 2147483647 }
  for (let i = 0; i < 5000; i++) {
    const e = event(i, {
      ts_ms: Math.floor(rnd() * 4e12), queue_wait_ms: rnd() * 10 ** (rnd() * 8 - 4), inference_ms: i % 2 === 0 ? Math.floor(rnd() * 1e6) : rnd(),
      compute_seconds: rnd() * 1e-3, cost_estimate_usd: i % 5 === 0 ? -rnd() * 10 : rnd() * 10 ** (rnd() * 10 - 8),
      http_status: Math.floor(rnd() * 600), rows: Math.floor(rnd() * 2 ** 32), batch_rows: i, tenant_id: `t-${i % 300}`,
    })
    events.push(e)
    ring.push(e, 'n')
  }
  ring.flushPage()
  const rows = roundTrip(t, pages)
  t.equal(rows.length, events.length)
  const bad: string[] = []
  rows.forEach((f, i) => {
    const e = events[i] as CostEvent
    const check = (name: string, want: unknown): void => { if (f[name] !== want) bad.push(`${i} ${name}: ${String(f[name])} != ${String(want)}`) }
    check('event_id', e.event_id)
    check('ts_ms', e.ts_ms)
    check('queue_wait_ms', e.queue_wait_ms)
    check('inference_ms', e.inference_ms)
    check('compute_seconds', e.compute_seconds)
    check('cost_estimate_usd', roundUsd(e.cost_estimate_usd))
    check('http_status', e.http_status)
    check('rows', e.rows)
    check('batch_rows', e.batch_rows)
    check('tenant_id', e.tenant_id)
  })
  t.same(bad.slice(0, 5), [], 'every value round-trips (cost at 12 decimals; 300 keys: UInt16 indexes)')
})

t.test('the ring is bounded by pages the sink has not returned, and reuses returned pages', async (t) => {
  const pages: PageMessage[] = []
  const ring = new EventRing(64, (m) => { pages.push(m) })
  let accepted = 0
  const before = Date.now()
  for (let i = 0; i < 100; i++) if (ring.push(event(i), 'n')) accepted++
  const after = Date.now()
  t.equal(accepted, 64, 'full pages in flight count against the bound')
  t.equal(pages.length, 4)
  t.ok(pages.every((m) => m.openedAt >= before && m.openedAt <= after), 'each page says when its first event came')
  t.ok(pages.every((m) => !m.cut), 'full pages do not end a flush period')
  t.equal(ring.depth, 64)
  const first = pages[0] as PageMessage
  t.same(first.strings.slice(0, 3), ['tenant-0', 'http:/v2/models/{m}/infer', 'tiny-classifier'], 'new strings travel with the first page that uses them')
  t.same((pages[1] as PageMessage).strings, [], 'and only once')
  ring.release(first.buf, first.n)
  t.equal(ring.depth, 48)
  t.ok(ring.push(event(200), 'n'), 'a returned page takes events again')
  t.equal(ring.flushPage(true), true)
  t.equal(pages.at(-1)?.cut, true, 'the page that ends a flush period says so')
  t.equal(pages.at(-1)?.n, 1)
  t.equal(ring.flushPage(true), false, 'no page to hand over: the caller sends a bare cut')
})

t.test('the dictionary restarts past DICT_MAX and says so on the next page', async (t) => {
  const pages: PageMessage[] = []
  const ring = new EventRing(4096, (m) => { pages.push(m) })
  const enc = new NativeBatchEncoder()
  for (let i = 0; i < 70_000; i++) {
    ring.push(event(i, { model_version: `v${i}` }), 'n')
    // The sink encodes each page as it comes (the ring reuses returned pages).
    for (const p of pages.splice(0)) { enc.add(p, 16); ring.release(p.buf, p.n) }
  }
  ring.flushPage()
  const rows = roundTrip(t, pages, enc)
  t.equal(rows.length, 70_000)
  t.same(rows.filter((r, i) => r.model_version !== `v${i}`).slice(0, 3), [], 'ids stay consistent across the reset (UInt32 indexes past 65 536 keys)')
  t.equal(rows.at(-1)?.tenant_id, 'tenant-0')
})

t.test('readonlySql appends readonly=1 to the statement or its SETTINGS list', async (t) => {
  t.equal(readonlySql('SELECT 1'), 'SELECT 1 SETTINGS readonly = 1')
  t.equal(readonlySql('SELECT 1 SETTINGS max_threads = 2'), 'SELECT 1 SETTINGS max_threads = 2, readonly = 1')
  t.throws(() => readonlySql('SELECT * FROM (SELECT 1 SETTINGS max_threads = 1)'), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' }, 'a subquery may not change settings')
  t.throws(() => readonlySql('WITH x AS (SELECT 1 SETTINGS readonly = 0) SELECT * FROM x'), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  t.throws(() => readonlySql('SELECT 1 SETTINGS readonly = 0'), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  t.throws(() => readonlySql("SELECT 1 SETTINGS profile = 'default'"), { code: 'FW_ERR_COST_QUERY_NOT_READONLY' })
  t.throws(() => readonlySql('SET max_threads = 1'), { code: 'FW_ERR_COST_QUERY_NOT_READONLY', message: /one SELECT/ }, 'only reading statements')
  t.throws(() => readonlySql('INSERT INTO t FORMAT Values (1)'), { code: 'FW_ERR_COST_QUERY_NOT_READONLY', message: /one SELECT/ })
  t.equal(readonlySql('(SELECT 1) UNION ALL (SELECT 2)'), '(SELECT 1) UNION ALL (SELECT 2) SETTINGS readonly = 1')
  t.equal(readonlySql('SHOW TABLES'), 'SHOW TABLES SETTINGS readonly = 1')
})

t.test('backoff doubles with equal jitter up to the cap', async (t) => {
  t.equal(backoffDelay(1, 100, 10_000, () => 0), 50)
  t.equal(backoffDelay(1, 100, 10_000, () => 1), 100)
  t.equal(backoffDelay(4, 100, 10_000, () => 0), 400)
  t.equal(backoffDelay(30, 100, 10_000, () => 1), 10_000)
})

t.test('insert errors: data errors are permanent, transport errors are not', async (t) => {
  t.ok(isPermanentInsertError({ code: '27', type: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED', message: 'x' }))
  t.notOk(isPermanentInsertError({ code: '210', type: 'NETWORK_ERROR' }))
  t.notOk(isPermanentInsertError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })))
  t.ok(isPermanentInsertError(new CostError('FW_ERR_COST_SPOOL_CORRUPT', 'f', 'x')))
})

t.test('spool: atomic batch files, lock, replay list, lost tmp files, quarantine', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fairway-spool-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const s = await Spool.open(dir)
  t.same(s.found, [])
  const id = uuidv7()
  const e = await s.write(id, 'cost_events', 2, 'tsv', [Buffer.from(COST_EVENT_COLUMNS.join('\t') + '\n'), Buffer.from('a\nb\n')])
  t.same(parseSpoolName(`${id}.cost_events.2.tsv`), { id, table: 'cost_events', rows: 2, format: 'tsv' })
  t.same(parseSpoolName(`${id}.cost_events.2.native`), { id, table: 'cost_events', rows: 2, format: 'native' })
  t.equal(parseSpoolName('junk.tsv'), null)
  t.equal(e.bytes, COST_EVENT_COLUMNS.join('\t').length + 5, 'the chunks, one after the other')
  t.same(await readSpoolColumns(e), [...COST_EVENT_COLUMNS])
  // A Native batch names its columns in the block header.
  const pages: PageMessage[] = []
  const ring = new EventRing(64, (m) => { pages.push(m) })
  ring.push(event(1), 'n')
  ring.flushPage()
  const enc = new NativeBatchEncoder()
  enc.add(pages[0] as PageMessage, 1)
  const id2 = uuidv7()
  const n = await s.write(id2, 'cost_events', 1, 'native', enc.finish())
  t.same(await readSpoolColumns(n), [...COST_EVENT_COLUMNS])
  t.same((await readNativeColumns(n.path)).slice(0, 3), [{ name: 'event_id', type: 'UUID' }, { name: 'ts_ms', type: 'Int64' }, { name: 'tenant_id', type: 'LowCardinality(String)' }])
  await s.remove(n)
  t.same(readdirSync(dir).filter((n) => n.endsWith('.tmp')), [], 'no temp file after a write')
  // A second owner in another (live) process is refused; our own pid is taken over.
  writeFileSync(join(dir, '.lock'), `${process.ppid}\n${hostname()}\n`)
  await t.rejects(Spool.open(dir), { code: 'FW_ERR_COST_SPOOL_LOCKED' })
  writeFileSync(join(dir, '.lock'), `${process.pid}\n${hostname()}\n`)
  writeFileSync(join(dir, `${uuidv7()}.cost_events.7.tsv.tmp`), 'half')
  const again = await Spool.open(dir)
  t.equal(again.lostRows, 7, 'a half-written batch is counted as lost')
  t.same(again.found.map((f) => f.id), [id], 'the complete batch is replayed')
  await again.quarantine(e)
  t.same(await listSpool(dir), [])
  t.same(await listSpool(join(dir, 'dead')).then((l) => l.map((f) => f.id)), [id])
  await again.close()
  t.notOk(readdirSync(dir).includes('.lock'))
})

t.test('capacity records: hour-truncated UTC, validated', async (t) => {
  const tsv = encodeCapacity([{ hour_ms: Date.parse('2030-01-01T10:42:00Z'), pool: 'shared', capacity_seconds: 7200, node_cost_usd: 0.3 }], 'node-a')
  const [hour, node, pool, cap, usd, at] = tsv.trim().split('\t')
  t.same([hour, node, pool, cap, usd], ['2030-01-01 10:00:00', 'node-a', 'shared', '7200', '0.300000000000'])
  t.ok(Number(at) > 0)
  t.throws(() => encodeCapacity([{ hour_ms: 0, pool: '', capacity_seconds: 1, node_cost_usd: 1 }], 'n'), { code: 'FW_ERR_COST_RECORD_INVALID' })
  t.throws(() => encodeCapacity([{ hour_ms: 0, pool: 'p', capacity_seconds: -1, node_cost_usd: 1 }], 'n'), { code: 'FW_ERR_COST_RECORD_INVALID' })
  t.same(dayRange('2030-01-01'), { from: '2030-01-01 00:00:00', to: '2030-01-02 00:00:00' })
})

t.test('a spool file that cannot be read is an I/O error (retried), one that is not Native is corrupt (dead-lettered)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fairway-native-io-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  // A directory opens but fails on read (EISDIR); a missing file fails on open.
  await t.rejects(readNativeColumns(dir), { code: 'FW_ERR_COST_SPOOL_IO' }, 'read failure')
  await t.rejects(readNativeColumns(join(dir, 'missing.native')), { code: 'FW_ERR_COST_SPOOL_IO' }, 'open failure')
  const junk = join(dir, 'junk.native')
  writeFileSync(junk, Buffer.from([3, 10, 1]))
  await t.rejects(readNativeColumns(junk), { code: 'FW_ERR_COST_SPOOL_CORRUPT' }, 'truncated header')
  t.equal(isPermanentInsertError(new CostError('FW_ERR_COST_SPOOL_IO', dir, 'EIO')), false, 'an I/O error is retried')
  t.equal(isPermanentInsertError(new CostError('FW_ERR_COST_SPOOL_CORRUPT', junk, 'bad')), true, 'a corrupt file is not')
})
