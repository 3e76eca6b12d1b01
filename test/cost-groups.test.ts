// Grouped inserts: batches are spooled every flushMs but wait up to
// insertMs and go to ClickHouse together, as one insert under a group
// manifest's token. Shown on embedded ClickHouse: one INSERT statement for
// several batches, exactly once in the raw table and the rollups, a crash
// between the group's acknowledgement and its unspool replayed under the
// same token (no duplicates), and a group refused for good split so that
// only its bad batch is dead-lettered.

import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import { uuidv7 } from '../src/cost/uuidv7.js'
import { costEvent, storedCounts as counts } from './helpers/cost.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-groups-'))
const DATA = join(DIR, 'data')
t.teardown(() => { rmSync(DIR, { recursive: true, force: true }) })

async function until (what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** `bursts` bursts of `each` events, each burst spooled as its own batch before the next. */
async function spoolBursts (p: CostPipeline, tenant: string, bursts: number, each: number): Promise<void> {
  const taken = (): number => { const s = p.stats(); return s.inserted + s.spooledRows }
  const start = taken()
  for (let b = 0; b < bursts; b++) {
    for (let i = 0; i < each; i++) p.emit(costEvent(tenant, b * each + i, '2030-06-01'))
    await until(`batch ${b + 1} spooled`, () => taken() === start + (b + 1) * each)
  }
}

async function insertQueries (p: CostPipeline): Promise<number> {
  // Not fresh: counting inserts must not cause one.
  return Number(JSON.parse(await p.query("SELECT sum(value) AS n FROM system.events WHERE event = 'InsertQuery'", 'JSONEachRow', { fresh: false })).n)
}

const spoolFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.native') || n.endsWith('.group'))

// First: the child must open the data directory before this process does
// (libchdb binds one per process and keeps it for the life of the process).
t.test('killed between a group insert and its unspool: the replay re-forms the group and is deduplicated', async (t) => {
  const spool = join(DIR, 'spool-crash')
  const child = join(DIR, 'child.mjs')
  writeFileSync(child, `
import { CostPipeline } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/cost/cost-pipeline.ts')).href)}
import { uuidv7 } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/cost/uuidv7.ts')).href)}
const [dataDir, spoolDir] = process.argv.slice(2)
const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir }, spoolDir, log: () => {}, flushMs: 20, insertMs: 600_000, faults: { crashAfterInsertBeforeUnspool: true } })
let i = 0
for (let b = 0; b < 3; b++) {
  for (let k = 0; k < 1000; k++) p.emit({
    event_id: uuidv7(), ts_ms: Date.parse('2030-06-01T00:00:00Z') + i++, tenant_id: 'crash', route: 'r', model_id: 'm', model_version: '1',
    variant: 'v', tier: 'shared', service_class: 'shared', model_class: 'light', status: 'ok', http_status: 200, queue_wait_ms: 1,
    inference_ms: 1, batch_rows: 1, rows: 1, compute_seconds: 0.001, cache_hit: false, fallback: false, degraded: false,
    cost_estimate_usd: 0.000001, price_version: 'p', cost_center: 'c', region: 'r', node_id: 'n',
  })
  while (p.stats().spooledRows < (b + 1) * 1000) await new Promise((resolve) => setTimeout(resolve, 10))
}
await p.flush() // the fault kills the process inside this, after the group's insert
`)
  const r = await new Promise<{ signal: NodeJS.Signals | null, stderr: string }>((resolve, reject) => {
    const c = spawn(process.execPath, [...process.execArgv, child, DATA, spool], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    c.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    c.on('error', reject)
    c.on('exit', (_code, signal) => { resolve({ signal, stderr }) })
  })
  t.equal(r.signal, 'SIGKILL', `the child died by SIGKILL${r.stderr === '' ? '' : ': ' + r.stderr.slice(0, 500)}`)
  const left = spoolFiles(spool)
  t.equal(left.filter((n) => n.endsWith('.native')).length, 3, 'the three acknowledged batches are still in the spool')
  t.equal(left.filter((n) => n.endsWith('.group')).length, 1, 'with their manifest')

  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, log: () => {} })
  t.same(await counts(p, 'crash'), { n: 3000, u: 3000, hourly: 3000, usage: 3000 }, 'the insert had happened before the crash')
  await p.flush()
  t.equal(p.stats().replayedBatches, 3)
  t.equal(p.stats().inserted, 3000, 'the group was sent again')
  t.same(await counts(p, 'crash'), { n: 3000, u: 3000, hourly: 3000, usage: 3000 }, 'and stored once, rollups included')
  t.same(spoolFiles(spool), [])
  await p.close()
})

t.test('batches wait out insertMs and go to ClickHouse as ONE insert, exactly once', async (t) => {
  const spool = join(DIR, 'spool-one')
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, flushMs: 20, insertMs: 600_000, log: () => {} })
  await spoolBursts(p, 'one', 3, 700)
  let s = p.stats()
  t.equal(s.spooledBatches, 3, 'three batches are durable in the spool')
  t.equal(s.inserted, 0, 'and none was inserted yet: the oldest has not waited insertMs')
  const before = await insertQueries(p)
  await p.flush()
  s = p.stats()
  t.equal(s.inserted, 2100, 'flush() does not wait for insertMs')
  t.equal(s.insertedBatches, 3)
  t.equal(await insertQueries(p) - before, 1, 'one INSERT statement for the three batches')
  t.same(await counts(p, 'one'), { n: 2100, u: 2100, hourly: 2100, usage: 2100 }, 'each event once, rollups included')
  t.same(spoolFiles(spool), [], 'the batches and the manifest are gone')
  await p.close()
})

t.test('without a flush the group goes in once the oldest batch has waited insertMs', async (t) => {
  const spool = join(DIR, 'spool-timed')
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, flushMs: 20, insertMs: 1500, log: () => {} })
  const t0 = Date.now()
  await spoolBursts(p, 'timed', 2, 300)
  t.equal(p.stats().inserted, 0, 'waiting')
  await until('the timed insert', () => p.stats().inserted === 600)
  t.ok(Date.now() - t0 >= 1500, 'not before insertMs')
  t.equal(p.stats().insertedBatches, 2)
  t.same(await counts(p, 'timed'), { n: 600, u: 600, hourly: 600, usage: 600 })
  await p.close()
})

t.test('a query first inserts what was emitted before it, however long insertMs is; fresh: false reads the store as it is', async (t) => {
  const spool = join(DIR, 'spool-fresh')
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, flushMs: 20, insertMs: 600_000, log: () => {} })
  await spoolBursts(p, 'fresh', 2, 300)
  for (let i = 0; i < 50; i++) p.emit(costEvent('fresh', 600 + i, '2030-06-01')) // still in the ring's page
  const sql = "SELECT count() AS n FROM cost_events WHERE tenant_id = 'fresh'"
  t.same(JSON.parse(await p.query(sql, 'JSONEachRow', { fresh: false })), { n: 0 }, 'not fresh: nothing inserted yet')
  t.equal(p.stats().inserted, 0, 'and asking did not insert')
  t.same(JSON.parse(await p.query(sql)), { n: 650 }, 'fresh: the spooled batches and the events still in the ring')
  t.equal(p.stats().inserted, 650)
  t.same(await counts(p, 'fresh'), { n: 650, u: 650, hourly: 650, usage: 650 }, 'each once, rollups included')
  await p.close()
})

t.test('a group never exceeds batchRows rows', async (t) => {
  const spool = join(DIR, 'spool-cap')
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, flushMs: 20, insertMs: 600_000, batchRows: 1000, log: () => {} })
  const before = await insertQueries(p)
  await spoolBursts(p, 'cap', 4, 400)
  await p.flush()
  t.equal(p.stats().inserted, 1600)
  t.equal(await insertQueries(p) - before, 2, '400+400 (as soon as a third batch could not join) and 400+400: two inserts of at most 1000 rows')
  t.same(await counts(p, 'cap'), { n: 1600, u: 1600, hourly: 1600, usage: 1600 })
  await p.close()
})

t.test('a batch offered alone keeps its own token on retry: batches that arrive meanwhile do not join it', async (t) => {
  const spool = join(DIR, 'spool-alone')
  const p = await CostPipeline.start({
    backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, flushMs: 20, insertMs: 0, retryBaseMs: 400, retryMaxMs: 400, log: () => {},
    faults: { failAfterInsert: 1 },
  })
  await spoolBursts(p, 'alone', 1, 300)
  await until('the first insert committed and reported lost', () => p.stats().insertFailures === 1)
  await spoolBursts(p, 'alone', 1, 200) // behind it while it backs off
  await p.flush()
  t.equal(p.stats().inserted, 500)
  t.same(await counts(p, 'alone'), { n: 500, u: 500, hourly: 500, usage: 500 }, 'the committed batch is not stored again inside a group')
  await p.close()
})

t.test('a group refused for good is inserted batch by batch: only the bad batch is dead-lettered', async (t) => {
  const spool = join(DIR, 'spool-bad')
  const logs: string[] = []
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, flushMs: 20, insertMs: 600_000, log: (m) => { logs.push(m) } })
  await spoolBursts(p, 'bad', 3, 250)
  // The middle batch rots on disk before its group goes in.
  const middle = readdirSync(spool).filter((n) => n.endsWith('.native')).sort()[1] as string
  writeFileSync(join(spool, middle), Buffer.from([25, 5, 8, ...Buffer.from('event_id'), 4, ...Buffer.from('UUID'), 1, 2, 3]))
  await p.flush()
  const s = p.stats()
  t.equal(s.inserted, 500, 'both good batches went in')
  t.equal(s.deadLetterBatches, 1)
  t.equal(s.deadLetterRows, 250)
  t.same(readdirSync(join(spool, 'dead')), [middle])
  t.same(spoolFiles(spool), [], 'no batch and no manifest left')
  t.match(logs.join('\n'), /refused group group-[0-9a-f-]+ \(3 batches\).*one by one/)
  t.same(await counts(p, 'bad'), { n: 500, u: 500, hourly: 500, usage: 500 })
  await p.close()
})

t.test('an unreadable group manifest stops the start instead of being forgotten', async (t) => {
  const spool = join(DIR, 'spool-unreadable')
  mkdirSync(join(spool, `${uuidv7()}.group`), { recursive: true }) // a directory: reading it fails
  await t.rejects(CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, log: () => {} }), { code: 'FW_ERR_COST_SPOOL_IO', message: /cannot read the group manifest/ })
})
