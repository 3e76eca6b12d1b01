// Faults injected around the real embedded ClickHouse connection: inserts
// that fail for a while, inserts whose acknowledgement is lost after they
// committed, and batches ClickHouse refuses for good. Exactly once means
// zero lost and zero duplicated, in the raw table and in the rollups.

import t from 'tap'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import { storedCounts as counts } from './helpers/cost.js'
import { COST_EVENT_COLUMNS, type CostEvent } from '../src/cost/cost-event.js'
import { uuidv7 } from '../src/cost/uuidv7.js'

const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-faults-'))
const DATA = join(DIR, 'data')
const SPOOL = join(DIR, 'spool')
t.teardown(() => { rmSync(DIR, { recursive: true, force: true }) })

function event (tenant: string, i: number): CostEvent {
  return {
    event_id: uuidv7(), ts_ms: Date.parse('2030-03-01T00:00:00Z') + i, tenant_id: tenant, route: 'http:/v2/models/{m}/infer',
    model_id: 'm', model_version: '1', variant: 'default', tier: 'shared', service_class: 'shared', model_class: 'light',
    status: 'ok', http_status: 200, queue_wait_ms: i % 10, inference_ms: 0.5, batch_rows: 4, rows: 1, compute_seconds: 0.00001,
    cache_hit: false, fallback: false, degraded: false, cost_estimate_usd: 0.000003, price_version: 'p', cost_center: 'c', region: 'r', node_id: 'n',
  }
}

t.test('inserts failing for a while, then lost acknowledgements: zero lost, zero duplicated', async (t) => {
  const logs: string[] = []
  const p = await CostPipeline.start({
    backend: { kind: 'embedded', dataDir: DATA },
    spoolDir: SPOOL,
    batchRows: 1000,
    flushMs: 50,
    retryBaseMs: 20,
    retryMaxMs: 200,
    // 4 inserts fail before reaching ClickHouse, then 3 are committed but reported as failed.
    faults: { failInserts: 4, failAfterInsert: 3 },
    log: (m) => { logs.push(m) },
  })
  t.teardown(() => p.close())
  for (let i = 0; i < 12_000; i++) {
    p.emit(event('retry', i))
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve))
  }
  await p.flush()
  const s = p.stats()
  t.equal(s.insertFailures, 7, 'every injected failure was seen and retried')
  t.equal(s.inserted, 12_000)
  t.equal(s.dropped, 0)
  t.equal(s.spooledBatches, 0)
  t.same(await counts(p, 'retry'), { n: 12_000, u: 12_000, hourly: 12_000, usage: 12_000 }, 'raw and rollups hold each event once')
  t.match(logs.join('\n'), /injected fault: insert failed before reaching ClickHouse; retry 1 in/)
  t.match(logs.join('\n'), /ClickHouse is back/)
  await p.close()
})

t.test('a batch ClickHouse refuses for good is parked in dead/ and does not block the others', async (t) => {
  // Planted while no pipeline runs, as if an older version had spooled them.
  const bad = uuidv7()
  const good = uuidv7()
  const bogus = uuidv7()
  const torn = uuidv7()
  const COST_EVENTS_HEADER = COST_EVENT_COLUMNS.join('\t') + '\n'
  const cols = COST_EVENT_COLUMNS.length
  writeFileSync(join(SPOOL, `${bad}.cost_events.1.tsv`), COST_EVENTS_HEADER + ['not-a-uuid', ...Array<string>(cols - 1).fill('x')].join('\t') + '\n')
  const line = (id: string): string => `${id}\t1\tdead-good\tr\tm\t1\tv\tshared\tshared\tlight\tok\t200\t1\t1\t1\t1\t0.1\t0\t0\t0\t0.000001\tp\tc\tr\tn\n`
  writeFileSync(join(SPOOL, `${good}.cost_events.2.tsv`), COST_EVENTS_HEADER + line(uuidv7()) + line(uuidv7()))
  writeFileSync(join(SPOOL, `${bogus}.no_such_table.1.tsv`), 'a\n1\n')
  writeFileSync(join(SPOOL, `${torn}.cost_events.5.native`), Buffer.from([25, 5, 8, ...Buffer.from('event_id'), 4, ...Buffer.from('UUID'), 1, 2, 3]))
  const logs: string[] = []
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: SPOOL, retryBaseMs: 20, log: (m) => { logs.push(m) } })
  t.teardown(() => p.close())
  await p.flush()
  const s = p.stats()
  t.equal(s.replayedBatches, 4)
  t.equal(s.deadLetterBatches, 3)
  t.equal(s.deadLetterRows, 7)
  t.equal(s.inserted, 2, 'the good batch behind the bad one went in')
  t.same(readdirSync(join(SPOOL, 'dead')).sort(), [`${bad}.cost_events.1.tsv`, `${bogus}.no_such_table.1.tsv`, `${torn}.cost_events.5.native`].sort())
  t.same(readdirSync(SPOOL).filter((n) => n.endsWith('.tsv') || n.endsWith('.native')), [])
  t.equal((await counts(p, 'dead-good')).n, 2)
  t.match(logs.join('\n'), /REFUSED batch .* for good/)
  t.same(await counts(p, 'retry'), { n: 12_000, u: 12_000, hourly: 12_000, usage: 12_000 }, 'earlier data untouched')
})
