// The HTTP backend with no server behind it (test/cost-http.test.ts has one):
// events stay safe in the spool; `fairway cost replay` then delivers
// that spool into an embedded store exactly once, even when replayed twice.
// Also: `fairway sql`, the ring and spool bounds (drops are counted and
// logged, never silent) and one-owner rules.

import t from 'tap'
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCostReplay, runSql, type CliIO } from '../src/cli/cost-commands.js'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import type { CostEvent } from '../src/cost/cost-event.js'
import { costEvent } from './helpers/cost.js'

const DIR = mkdtempSync(join(tmpdir(), 'fairway-cost-replay-'))
const DATA = join(DIR, 'data')
const UNREACHABLE = 'http://127.0.0.1:1'
t.teardown(() => { rmSync(DIR, { recursive: true, force: true }) })

const event = (tenant: string, i: number): CostEvent => costEvent(tenant, i, '2030-05-01')

function io (): CliIO & { stdout: string, stderr: string } {
  const r = { stdout: '', stderr: '', out: (s: string) => { r.stdout += s }, err: (s: string) => { r.stderr += s } }
  return r
}

async function until (what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

t.test('unreachable HTTP server: events stay in the spool, then replay into embedded delivers them exactly once', async (t) => {
  const spool = join(DIR, 'spool-http')
  const logs: string[] = []
  const p = await CostPipeline.start({ backend: { kind: 'http', url: UNREACHABLE }, spoolDir: spool, batchRows: 1000, flushMs: 50, retryBaseMs: 50, retryMaxMs: 200, log: (m) => { logs.push(m) } })
  t.ok(p, 'start does not need the server')
  for (let i = 0; i < 5000; i++) {
    p.emit(event('http', i))
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve))
  }
  await until('5000 events spooled', () => p.stats().spooledRows === 5000)
  const s = p.stats()
  t.equal(s.inserted, 0)
  t.equal(s.dropped, 0)
  const batches = s.spooledBatches
  t.ok(batches >= 5, `${batches} batches (batches hold whole ring pages, so a partial page can add one)`)
  await t.rejects(p.flush({ timeoutMs: 200 }), { code: 'FW_ERR_COST_TIMEOUT' }, 'flush cannot complete without the server')
  await t.rejects(p.query('SELECT 1'), { code: 'FW_ERR_COST_BACKEND_UNAVAILABLE' }, 'a query to nowhere: the store is away')
  t.match(logs.join('\n'), /cannot create the cost schema: .*ECONNREFUSED.*safe in the spool/)
  await p.close({ timeoutMs: 200 })
  t.match(logs.at(-1), new RegExp(`closing with ${batches} batches \\(5000 events\\) still in .*fairway cost replay --spool`))
  t.equal(readdirSync(spool).filter((n) => n.endsWith('.native')).length, batches, 'the spool survives close')
  const copy = join(DIR, 'spool-copy')
  cpSync(spool, copy, { recursive: true })

  const first = io()
  t.equal(await runCostReplay(['--spool', spool, '--data-dir', DATA], first), 0, first.stderr)
  t.match(first.stdout, new RegExp(`${batches} batches \\(5000 rows\\) -> embedded store`))
  t.match(first.stdout, new RegExp(`inserted 5000 rows in ${batches} batches.*0 batches left`))
  t.same(readdirSync(spool).filter((n) => n.endsWith('.native')), [], 'replay empties the spool')

  const again = io()
  t.equal(await runCostReplay(['--spool', copy, '--data-dir', DATA], again), 0, again.stderr)
  const nothing = io()
  t.equal(await runCostReplay(['--spool', spool, '--data-dir', DATA], nothing), 0)
  t.match(nothing.stdout, /no spooled batches/)

  const q = io()
  t.equal(await runSql([`SELECT
      (SELECT count() FROM cost_events WHERE tenant_id = 'http') AS n,
      (SELECT uniqExact(event_id) FROM cost_events WHERE tenant_id = 'http') AS u,
      (SELECT sum(requests) FROM cost_hourly WHERE tenant_id = 'http') AS hourly`, '--format', 'json', '--data-dir', DATA], q), 0, q.stderr)
  t.same(JSON.parse(q.stdout), { n: 5000, u: 5000, hourly: 5000 }, 'replayed twice, stored once')
})

t.test('fairway sql: formats, params, read-only by default, usage errors', async (t) => {
  const run = async (...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> => {
    const r = io()
    const code = await runSql([...args, '--data-dir', DATA], r)
    return { code, stdout: r.stdout, stderr: r.stderr }
  }
  t.match((await run("SELECT tenant_id, count() AS n FROM cost_events WHERE tenant_id = 'http' GROUP BY tenant_id")).stdout, /┌─tenant_id─┬────n─┐\n1\. │ http {6}│ 5000 │/)
  t.equal((await run("SELECT 'a,b' AS x, 2 AS y", '--format', 'csv')).stdout, '"x","y"\n"a,b",2\n')
  t.equal((await run('SELECT 1 AS x', '--format', 'tsv')).stdout, 'x\n1\n')
  t.equal((await run('SELECT {d:String} AS d', '--format', 'json', '--param', 'd=2030-05-01')).stdout, '{"d":"2030-05-01"}\n')
  const denied = await run('DROP TABLE cost_events')
  t.equal(denied.code, 1)
  t.match(denied.stderr, /FW_ERR_COST_QUERY_NOT_READONLY/)
  t.equal((await run('CREATE TABLE IF NOT EXISTS notes (a String) ENGINE = Memory', '--write')).code, 0, '--write allows changes')
  t.equal((await run('SELECT 1', '--format', 'xml')).code, 2)
  const none = io()
  t.equal(await runSql(['SELECT 1'], none), 2)
  t.match(none.stderr, /no cost store/)
  t.equal(await runSql([], io()), 2)
  t.equal(await runCostReplay(['--data-dir', DATA], io()), 2, '--spool is required')
  // A mistyped directory is an error, not an empty store or an empty replay.
  const typo = io()
  t.equal(await runSql(['SELECT count() FROM cost_events', '--data-dir', DATA + '-typo'], typo), 2)
  t.match(typo.stderr, /no such directory/)
  t.notOk(existsSync(DATA + '-typo'), 'and no store was created there')
  const noSpool = io()
  t.equal(await runCostReplay(['--spool', DATA + '-no-spool', '--data-dir', DATA], noSpool), 2)
  t.match(noSpool.stderr, /no such directory/)
  const both = io()
  t.equal(await runSql(['SELECT 1', '--data-dir', DATA, '--url', UNREACHABLE], both), 2)
  const down = io()
  t.equal(await runSql(['SELECT 1', '--url', UNREACHABLE], down), 1)
  t.match(down.stderr, /FW_ERR_COST_BACKEND_UNAVAILABLE.*ECONNREFUSED/, 'nothing listening is the store being away, not a bad query')
})

t.test('a full ring drops, counts and says so; it never blocks or throws', async (t) => {
  const logs: string[] = []
  const p = await CostPipeline.start({ backend: { kind: 'http', url: UNREACHABLE }, spoolDir: join(DIR, 'spool-ring'), ringCapacity: 64, log: (m) => { logs.push(m) } })
  // A synchronous burst: the sink cannot hand pages back until we yield.
  for (let i = 0; i < 10_000; i++) p.emit(event('ring', i))
  const s = p.stats()
  t.equal(s.emitted, 64)
  t.equal(s.droppedRingFull, 9936)
  t.equal(s.dropped, 9936)
  t.equal(logs.filter((l) => /DROPPING cost events/.test(l)).length, 1, 'one loud warning, rate-limited')
  await until('pages returned', () => p.stats().ringDepth === 0)
  p.emit(event('ring', 1))
  t.equal(p.stats().emitted, 65, 'takes events again once the sink caught up')
  await p.close({ timeoutMs: 100 })
})

t.test('a full spool drops whole batches, counted and logged', async (t) => {
  const logs: string[] = []
  const p = await CostPipeline.start({ backend: { kind: 'http', url: UNREACHABLE }, spoolDir: join(DIR, 'spool-cap'), ringCapacity: 400, batchRows: 100, flushMs: 20, spoolMaxBytes: 60_000, log: (m) => { logs.push(m) } })
  // Pages of 100 events (ringCapacity / 4), so batches of 100 rows (~20 kB).
  for (let i = 0; i < 3000; i++) {
    p.emit(event('cap', i))
    if (i % 100 === 99) await new Promise((resolve) => setTimeout(resolve, 2))
  }
  // Under load the ring may also drop some (counted apart); every accepted event ends spooled or dropped.
  p.flush({ timeoutMs: 1 }).catch(() => {})
  await until('every accepted event spooled or dropped', () => { const s = p.stats(); return s.ringDepth === 0 && s.spooledRows + s.droppedSpoolFull === s.emitted })
  const s = p.stats()
  t.ok(s.droppedSpoolFull > 0 && s.spooledRows > 0, `${s.spooledRows} spooled, ${s.droppedSpoolFull} dropped at the spool`)
  t.ok(s.spooledBytes <= 60_000, 'the cap holds')
  t.equal(s.emitted + s.droppedRingFull, 3000)
  t.equal(s.dropped, s.droppedSpoolFull + s.droppedRingFull)
  t.match(logs.join('\n'), /DROPPING 100 cost events: spool .* is at its cap of 60000 bytes/)
  await p.close({ timeoutMs: 100 })
})

t.test('one live pipeline per spool directory and one embedded store per process', async (t) => {
  const spool = join(DIR, 'spool-owner')
  const a = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: spool, log: () => {} })
  await t.rejects(CostPipeline.start({ backend: { kind: 'http', url: UNREACHABLE }, spoolDir: spool }), { code: 'FW_ERR_COST_SPOOL_LOCKED' })
  await t.rejects(CostPipeline.start({ backend: { kind: 'embedded', dataDir: join(DIR, 'other') }, spoolDir: join(DIR, 'spool-other') }), { code: 'FW_ERR_COST_BACKEND_LOCKED' })
  await t.rejects(CostPipeline.start({ backend: { kind: 'embedded', dataDir: '' }, spoolDir: spool }), { code: 'FW_ERR_COST_OPTIONS_INVALID' })
  await t.rejects(CostPipeline.start({ backend: { kind: 'embedded', dataDir: DATA }, spoolDir: join(DIR, 's'), batchRows: 0 }), { code: 'FW_ERR_COST_OPTIONS_INVALID' })
  t.equal(await a.query("SELECT count() AS n FROM cost_events WHERE tenant_id = 'http'"), '{"n":5000}\n')
  await a.close()
  const b = await CostPipeline.start({ backend: { kind: 'http', url: UNREACHABLE }, spoolDir: spool, log: () => {} })
  t.ok(b, 'the spool is free again after close')
  await b.close({ timeoutMs: 50 })
})
