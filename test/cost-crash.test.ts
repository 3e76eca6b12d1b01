// Crashes: a child process runs the pipeline and dies by SIGKILL — once at
// the worst moment (ClickHouse acknowledged a batch, its spool file is not
// deleted yet: the crashAfterInsertBeforeUnspool fault), once at a random
// moment while streaming. A restart replays the spool and every event that
// was durable is stored exactly once, in the raw table and in the rollups.
// This process opens the data directory only after the child has died.

import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ClickHouseBackend } from '../src/cost/clickhouse-backend.js'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import { storedCounts as counts } from './helpers/cost.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-crash-'))
const DATA = join(DIR, 'data')
const SPOOL = join(DIR, 'spool')
const CHILD = join(DIR, 'child.mjs')
t.teardown(() => { rmSync(DIR, { recursive: true, force: true }) })

// Runs under this process's TypeScript loader (process.execArgv).
writeFileSync(CHILD, `
import { CostPipeline } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/cost/cost-pipeline.ts')).href)}
import { uuidv7 } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/cost/uuidv7.ts')).href)}
const [dataDir, spoolDir, mode, tenant] = process.argv.slice(2)
const crash = mode === 'crash'
const p = await CostPipeline.start({
  backend: { kind: 'embedded', dataDir }, spoolDir, log: () => {},
  batchRows: crash ? 1_000_000 : 500, flushMs: crash ? 60_000 : 20,
  faults: crash ? { crashAfterInsertBeforeUnspool: true } : {},
})
let i = 0
const emit = () => p.emit({
  event_id: uuidv7(), ts_ms: Date.parse('2030-04-01T00:00:00Z') + i++, tenant_id: tenant, route: 'r', model_id: 'm', model_version: '1',
  variant: 'v', tier: 'shared', service_class: 'shared', model_class: 'light', status: 'ok', http_status: 200, queue_wait_ms: 1,
  inference_ms: 1, batch_rows: 1, rows: 1, compute_seconds: 0.001, cache_hit: false, fallback: false, degraded: false,
  cost_estimate_usd: 0.000001, price_version: 'p', cost_center: 'c', region: 'r', node_id: 'n',
})
if (crash) {
  for (let k = 0; k < 3000; k++) emit()
  await p.flush() // the fault kills the process inside this
} else {
  setInterval(() => {
    for (let k = 0; k < 400; k++) emit()
    process.stdout.write(\`inserted \${p.stats().inserted}\\n\`)
  }, 10)
}
`)

function child (mode: string, tenant: string, onLine: (line: string, kill: () => void) => void = () => {}): Promise<{ code: number | null, signal: NodeJS.Signals | null, stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [...process.execArgv, CHILD, DATA, SPOOL, mode, tenant], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    c.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    c.stdout.on('data', (d: Buffer) => { for (const line of d.toString().split('\n')) if (line !== '') onLine(line, () => { c.kill('SIGKILL') }) })
    c.on('error', reject)
    c.on('exit', (code, signal) => { resolve({ code, signal, stderr }) })
  })
}

t.test('killed between the insert and the spool removal: the replay is deduplicated', async (t) => {
  const r = await child('crash', 'crash')
  t.equal(r.signal, 'SIGKILL', `the child died by SIGKILL${r.stderr === '' ? '' : ': ' + r.stderr.slice(0, 500)}`)
  const left = readdirSync(SPOOL).filter((n) => n.endsWith('.native'))
  t.equal(left.length, 1, 'its acknowledged batch is still in the spool')
  t.match(left[0], /\.cost_events\.3000\.native$/)

  // Proof the insert did happen before the crash (opened from this thread, then closed).
  const direct = ClickHouseBackend.open({ kind: 'embedded', dataDir: DATA })
  t.equal(await direct.query("SELECT count() FROM cost_events WHERE tenant_id = 'crash'", 'TabSeparatedWithNames'), 'count()\n3000\n')
  await direct.close()

  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: SPOOL, log: () => {} })
  await p.flush()
  t.equal(p.stats().replayedBatches, 1)
  t.equal(p.stats().inserted, 3000, 'the batch was sent again')
  t.same(await counts(p, 'crash'), { n: 3000, u: 3000, hourly: 3000, usage: 3000 }, 'and stored once, rollups included')
  t.same(readdirSync(SPOOL).filter((n) => n.endsWith('.native')), [])
  await p.close()
})

t.test('kill -9 at a random moment while streaming: no duplicates, every durable event once', async (t) => {
  let insertedBeforeKill = 0
  const r = await child('stream', 'stream', (line, kill) => {
    const n = Number(/inserted (\d+)/.exec(line)?.[1] ?? 0)
    insertedBeforeKill = Math.max(insertedBeforeKill, n)
    if (n >= 6000) kill()
  })
  t.equal(r.signal, 'SIGKILL')
  const spooled = readdirSync(SPOOL).filter((n) => n.endsWith('.native')).reduce((sum, n) => sum + Number(n.split('.')[2]), 0)
  const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: SPOOL, log: () => {} })
  await p.flush()
  const c = await counts(p, 'stream')
  t.equal(c.u, c.n, `no event twice (${c.n} stored)`)
  t.equal(c.hourly, c.n, 'cost_hourly agrees with the raw table')
  t.equal(c.usage, c.n, 'usage_hourly agrees with the raw table')
  t.ok(c.n >= insertedBeforeKill, `everything acknowledged before the kill is there (${insertedBeforeKill} acknowledged)`)
  t.equal(p.stats().replayedRows, spooled, `${spooled} events were in the spool at restart`)
  t.ok(c.n >= spooled, 'the spooled ones are all there')
  t.comment(`acknowledged before the kill ${insertedBeforeKill}, spooled at restart ${spooled}, stored ${c.n}, lost in half-written spool files ${p.stats().lostOnCrash}`)
  t.same(await counts(p, 'crash'), { n: 3000, u: 3000, hourly: 3000, usage: 3000 }, 'the first test\'s rows are untouched')
  await p.close()
})
