// The HTTP backend against a real ClickHouse HTTP interface: clickhouse-local
// from the chdb package's libchdb (ClickHouse 26.x) with its HTTP listener
// started (test/helpers/clickhouse-http-server.c, compiled here with the C
// compiler the native addon already needs). Migrations, Native inserts with
// deduplication tokens, rollups, `fairway sql` and `fairway cost replay`
// all go over HTTP to it.

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runCostReplay, runSql, type CliIO } from '../src/cli/cost-commands.js'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import type { CostEvent } from '../src/cost/cost-event.js'
import { uuidv7 } from '../src/cost/uuidv7.js'

const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-http-'))
t.teardown(() => { rmSync(DIR, { recursive: true, force: true }) })

const libchdb = join(dirname(createRequire(import.meta.url).resolve('@chdb/lib-linux-x64-gnu/package.json')), 'libchdb.so')
const server = join(DIR, 'clickhouse-http-server')
const cc = spawnSync('cc', ['-O1', '-o', server, join(dirname(fileURLToPath(import.meta.url)), 'helpers', 'clickhouse-http-server.c'), '-ldl'], { encoding: 'utf8' })
if (cc.status !== 0) throw new Error(`cannot compile the test server: ${cc.stderr}`)

/** A port free a moment ago (another test file may still take it first). */
async function freePort (): Promise<number> {
  return await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => { resolve(p) })
    })
  })
}

/**
 * Starts the ClickHouse HTTP server and waits until it answers. libchdb takes
 * seconds to load, and a test file running in parallel can take the port in
 * between: a server that exits before answering is started again on a fresh
 * port (up to three times).
 */
async function startClickHouse (): Promise<{ url: string, version: string }> {
  let childErr = ''
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    const child = spawn(server, [libchdb, join(DIR, 'server-data'), String(port)], { stdio: ['ignore', 'ignore', 'pipe'] })
    childErr = ''
    child.stderr.on('data', (d: Buffer) => { childErr += d.toString() })
    t.teardown(() => { child.kill('SIGKILL') })
    for (let i = 0; i < 300; i++) {
      try {
        const r = await fetch(`${url}/?query=${encodeURIComponent('SELECT version()')}`, { signal: AbortSignal.timeout(2000) })
        if (r.ok) return { url, version: (await r.text()).trim() }
      } catch {}
      if (child.exitCode !== null) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    if (child.exitCode === null) break // running but never answered: no retry helps
  }
  throw new Error(`ClickHouse HTTP server did not come up: ${childErr}`)
}
const { url: URL_, version } = await startClickHouse()
// The cost tables live in their own Atomic database (migration 4 swaps
// tables with EXCHANGE TABLES; clickhouse-local's default database is not Atomic).
const created = await fetch(URL_, { method: 'POST', body: 'CREATE DATABASE IF NOT EXISTS fairway ENGINE = Atomic' })
if (!created.ok) throw new Error(await created.text())

function event (tenant: string, i: number): CostEvent {
  return {
    event_id: uuidv7(), ts_ms: Date.parse('2030-06-01T00:00:00Z') + i, tenant_id: tenant, route: 'http:/v2/models/{m}/infer',
    model_id: 'm', model_version: '1', variant: 'default', tier: 'shared', service_class: 'shared', model_class: 'light',
    status: i % 10 === 0 ? 'rejected' : 'ok', http_status: i % 10 === 0 ? 429 : 200, queue_wait_ms: 1, inference_ms: 0.5, batch_rows: 4, rows: 1,
    compute_seconds: i % 10 === 0 ? 0 : 0.00001, cache_hit: false, fallback: false, degraded: false,
    cost_estimate_usd: i % 10 === 0 ? 0 : 0.000003, price_version: 'p', cost_center: 'c', region: 'r', node_id: 'n',
  }
}

function io (): CliIO & { stdout: string, stderr: string } {
  const r = { stdout: '', stderr: '', out: (s: string) => { r.stdout += s }, err: (s: string) => { r.stderr += s } }
  return r
}

async function sql (query: string): Promise<unknown> {
  const r = io()
  const code = await runSql([query, '--format', 'json', '--url', URL_, '--database', 'fairway'], r)
  if (code !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout)
}

t.test(`events reach a ClickHouse ${version} server over HTTP exactly once, rollups agree`, async (t) => {
  const spool = join(DIR, 'spool-live')
  const p = await CostPipeline.start({ backend: { kind: 'http', url: URL_, database: 'fairway' }, spoolDir: spool, batchRows: 1000, flushMs: 50, log: () => {} })
  for (let i = 0; i < 5000; i++) {
    p.emit(event('live', i))
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve))
  }
  await p.flush({ timeoutMs: 60_000 })
  t.equal(p.stats().inserted, 5000, 'the sink inserted every event')
  await p.close({ timeoutMs: 10_000 })
  t.same(readdirSync(spool).filter((n) => n.endsWith('.native')), [], 'nothing left in the spool')
  t.same(await sql(`SELECT
      (SELECT count() FROM cost_events WHERE tenant_id = 'live') AS n,
      (SELECT uniqExact(event_id) FROM cost_events WHERE tenant_id = 'live') AS u,
      (SELECT countIf(status = 'rejected') FROM cost_events WHERE tenant_id = 'live') AS rejected,
      (SELECT sum(requests) FROM cost_hourly WHERE tenant_id = 'live') AS hourly,
      (SELECT round(sum(cost_estimate_usd), 9) FROM cost_events WHERE tenant_id = 'live') AS raw_usd,
      (SELECT round(sum(cost_usd), 9) FROM cost_hourly WHERE tenant_id = 'live') AS hourly_usd`),
  { n: 5000, u: 5000, rejected: 500, hourly: 5000, raw_usd: 0.0135, hourly_usd: 0.0135 }, 'raw table and hourly rollup agree')
})

t.test('batches grouped into one insert go over HTTP as one Native body, exactly once', async (t) => {
  const spool = join(DIR, 'spool-group')
  const p = await CostPipeline.start({ backend: { kind: 'http', url: URL_, database: 'fairway' }, spoolDir: spool, flushMs: 20, insertMs: 600_000, log: () => {} })
  for (let b = 0; b < 3; b++) {
    for (let i = 0; i < 400; i++) p.emit(event('grouped', b * 400 + i))
    const end = Date.now() + 20_000
    while (p.stats().spooledRows < (b + 1) * 400 && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 10))
  }
  t.equal(p.stats().spooledBatches, 3, 'three batches in the spool')
  t.equal(p.stats().inserted, 0, 'waiting for insertMs')
  await p.flush({ timeoutMs: 60_000 })
  t.equal(p.stats().inserted, 1200)
  t.equal(p.stats().insertedBatches, 3)
  await p.close({ timeoutMs: 10_000 })
  t.same(readdirSync(spool).filter((n) => n.endsWith('.native') || n.endsWith('.group')), [], 'batches and manifest removed')
  t.same(await sql(`SELECT
      (SELECT count() FROM cost_events WHERE tenant_id = 'grouped') AS n,
      (SELECT uniqExact(event_id) FROM cost_events WHERE tenant_id = 'grouped') AS u,
      (SELECT sum(requests) FROM cost_hourly WHERE tenant_id = 'grouped') AS hourly`),
  { n: 1200, u: 1200, hourly: 1200 }, 'every event of the three batches once')
})

t.test('a spool kept while the server was unreachable replays into it exactly once, even twice', async (t) => {
  const spool = join(DIR, 'spool-kept')
  const down = await CostPipeline.start({ backend: { kind: 'http', url: 'http://127.0.0.1:1' }, spoolDir: spool, batchRows: 500, flushMs: 50, retryBaseMs: 50, retryMaxMs: 200, log: () => {} })
  for (let i = 0; i < 2000; i++) down.emit(event('kept', i))
  for (let i = 0; i < 1500 && down.stats().spooledRows < 2000; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(down.stats().spooledRows, 2000, 'all spooled while the server is unreachable')
  await down.close({ timeoutMs: 200 })
  const copy = join(DIR, 'spool-kept-copy')
  cpSync(spool, copy, { recursive: true })
  for (const dir of [spool, copy]) {
    const r = io()
    t.equal(await runCostReplay(['--spool', dir, '--url', URL_, '--database', 'fairway'], r), 0, r.stderr)
  }
  t.same(await sql("SELECT count() AS n, uniqExact(event_id) AS u FROM cost_events WHERE tenant_id = 'kept'"), { n: 2000, u: 2000 }, 'replayed twice, stored once (deduplication token)')
})
