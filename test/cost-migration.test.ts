// Migration 4 (cost_events re-keyed by time) on a store left at schema 3
// with data and an unfinished earlier attempt: the rows move over, the
// views keep feeding the rollups, the spool of the older version (TSV)
// replays, and a rerun is harmless.

import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClickHouseBackend } from '../src/cost/clickhouse-backend.js'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import { COST_EVENT_COLUMNS, type CostEvent } from '../src/cost/cost-event.js'
import { COST_EVENTS_KEY, MIGRATIONS } from '../src/cost/schema.js'
import { uuidv7 } from '../src/cost/uuidv7.js'

const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-migration-'))
const DATA = join(DIR, 'data')
const SPOOL = join(DIR, 'spool')
t.teardown(() => { rmSync(DIR, { recursive: true, force: true }) })

const TS = Date.parse('2030-03-01T10:00:00Z')

function event (i: number): CostEvent {
  return {
    event_id: uuidv7(), ts_ms: TS + i, tenant_id: `m-t${i % 3}`, route: 'http:/v2/models/{m}/infer', model_id: 'm', model_version: '1',
    variant: 'default', tier: 'shared', service_class: 'shared', model_class: 'light', status: 'ok', http_status: 200, queue_wait_ms: 1,
    inference_ms: 1, batch_rows: 1, rows: 1, compute_seconds: 0.001, cache_hit: false, fallback: false, degraded: false,
    cost_estimate_usd: 0.000001, price_version: 'p', cost_center: 'c', region: 'r', node_id: 'n',
  }
}

/** TabSeparated rows in COST_EVENT_COLUMNS order, as versions before the Native spool wrote them. */
function tsvRows (events: CostEvent[]): string {
  const flags = new Set(['cache_hit', 'fallback', 'degraded'])
  return events.map((e) => COST_EVENT_COLUMNS.map((c) => flags.has(c) ? (e[c] === true ? '1' : '0') : String(e[c])).join('\t') + '\n').join('')
}

const counts = async (p: CostPipeline): Promise<{ n: number, u: number, hourly: number }> => JSON.parse(await p.query(`SELECT
    (SELECT count() FROM cost_events FINAL WHERE startsWith(tenant_id, 'm-')) AS n,
    (SELECT uniqExact(event_id) FROM cost_events WHERE startsWith(tenant_id, 'm-')) AS u,
    (SELECT sum(requests) FROM cost_hourly WHERE startsWith(tenant_id, 'm-')) AS hourly`)) as { n: number, u: number, hourly: number }

t.test('a schema-3 store with rows is re-keyed by time, rows and views intact', async (t) => {
  // Build schema 3 by hand, as an older version left it, with 50 rows through the views.
  const old = ClickHouseBackend.open({ kind: 'embedded', dataDir: DATA })
  const write = { readonly: false }
  await old.query("CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version", 'TabSeparatedWithNames', write)
  for (const m of MIGRATIONS.filter((m) => m.version <= 3)) {
    for (const s of m.statements('`default`', 'default')) await old.query(typeof s === 'string' ? s : s.sql, 'TabSeparatedWithNames', write)
    await old.query(`INSERT INTO schema_migrations (version, name) VALUES (${m.version}, '${m.name}')`, 'TabSeparatedWithNames', write)
  }
  const rows = Array.from({ length: 50 }, (_, i) => event(i))
  await old.query(`INSERT INTO cost_events (${COST_EVENT_COLUMNS.join(', ')}) FORMAT TabSeparated\n${tsvRows(rows)}`, 'TabSeparatedWithNames', write)
  // A half-done earlier attempt: the new table exists with stray rows.
  const m4 = MIGRATIONS.find((m) => m.version === 4)
  const first = m4?.statements('`default`', 'default')[0]
  await old.query(typeof first === 'string' ? first : '', 'TabSeparatedWithNames', write)
  await old.query(`INSERT INTO cost_events_rekey (${COST_EVENT_COLUMNS.join(', ')}) FORMAT TabSeparated\n${tsvRows(rows.slice(0, 1))}`, 'TabSeparatedWithNames', write)
  await old.close()

  // A TSV batch in the spool, as the older version wrote them.
  const spooled = Array.from({ length: 10 }, (_, i) => event(100 + i))
  mkdirSync(SPOOL, { recursive: true })
  writeFileSync(join(SPOOL, `${uuidv7()}.cost_events.10.tsv`), COST_EVENT_COLUMNS.join('\t') + '\n' + tsvRows(spooled))

  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: SPOOL, log: () => {} })
  t.teardown(() => p.close())
  t.equal(p.stats().schemaVersion, 4)
  for (let i = 0; i < 40; i++) p.emit(event(200 + i))
  await p.flush()
  t.equal(p.stats().replayedRows, 10, 'the old TSV spool replays')
  const keys = JSON.parse(await p.query("SELECT sorting_key AS k, (SELECT count() FROM system.tables WHERE database = 'default' AND name = 'cost_events_rekey') AS leftover FROM system.tables WHERE database = 'default' AND name = 'cost_events'")) as { k: string, leftover: number }
  t.same(keys, { k: COST_EVENTS_KEY, leftover: 0 }, 'new key, no table left behind')
  t.same(await counts(p), { n: 100, u: 100, hourly: 100 }, 'the 50 old rows (no stray copy), 10 replayed, 40 new; the views read the new table')
})
