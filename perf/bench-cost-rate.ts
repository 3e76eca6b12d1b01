// Cost pipeline CPU at a steady, batch-1-like event rate (default 2,000
// events/s), by insertMs: how much of the sink's and ClickHouse's CPU is
// per insert rather than per event. Each case runs in its own child process
// (libchdb binds one data directory per process), cases interleaved over
// the rounds so drift on a shared machine hits both alike.
//
// Measured: CPU of every thread but the emitting (main) one, from
// /proc/self/task/*/schedstat (ns, exact), over the emitting window; then
// flush() and a count of stored and unique events.
//
// Run: npm run bench:cost-rate [-- --rate 2000 --seconds 60 --rounds 2 --insert-ms 3000,30000]

import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CostPipeline, defaultInsertMs } from '../src/cost/cost-pipeline.js'
import type { CostEvent } from '../src/cost/cost-event.js'
import { uuidv7 } from '../src/cost/uuidv7.js'
import { packageRoot } from '../src/runtime/affinity.js'
import { runMain } from './bench-platform.js'
import { runChildJson } from './child-json.js'
import { cliNumber, parseCli } from './cli-args.js'

const USAGE = `usage: node dist/perf/bench-cost-rate.js [options]   (npm run bench:cost-rate -- [options])
  --rate N         cost events per second (default 2000)
  --seconds S      emitting seconds per case (default 60)
  --rounds N       rounds, cases interleaved within each (default 2)
  --insert-ms LIST comma-separated cost.insertMs values, one case each (default 3000,30000: the server and embedded defaults)
  --case MS        run one case in this process and print its JSON (no perf/RESULTS.md)
  --help           this text`

interface CaseResult {
  insertMs: number
  events: number
  /** Sink thread, ClickHouse threads, libuv, GC helpers: everything but the emitter. */
  sinkUsPerEvent: number
  sinkMsPerSec: number
  batchesInserted: number
  stored: number
  unique: number
}

/** Sum of sum_exec_runtime (ns) per thread of this process. */
function threadTimes (): Map<string, number> {
  const m = new Map<string, number>()
  for (const t of readdirSync('/proc/self/task')) {
    try { m.set(t, Number(readFileSync(`/proc/self/task/${t}/schedstat`, 'utf8').split(' ')[0])) } catch {}
  }
  return m
}

async function runCase (rate: number, seconds: number, insertMs: number): Promise<CaseResult> {
  const dir = mkdtempSync(join(tmpdir(), 'fairway-bench-cost-rate-'))
  try {
    const p = await CostPipeline.start({ backend: { kind: 'embedded', dataDir: join(dir, 'chdb') }, spoolDir: join(dir, 'spool'), insertMs, log: () => {} })
    const ev: CostEvent = {
      event_id: '', ts_ms: 0, tenant_id: 'bench', route: 'http:/v2/models/{m}/infer', model_id: 'tiny-classifier', model_version: '1',
      variant: 'shared', tier: 'shared', service_class: 'shared', model_class: 'light', status: 'ok', http_status: 200, queue_wait_ms: 0.3,
      inference_ms: 0.01, batch_rows: 1, rows: 1, compute_seconds: 0.00001, cache_hit: false, fallback: false, degraded: false,
      cost_estimate_usd: 0.000001, price_version: 'bench', cost_center: 'cc', region: 'r', node_id: 'n',
    }
    await new Promise((resolve) => setTimeout(resolve, 3000)) // past start-up merges
    const main = String(process.pid)
    const before = threadTimes()
    let n = 0
    const perTick = rate / 100
    const tick = setInterval(() => {
      for (let i = 0; i < perTick; i++) { ev.event_id = uuidv7(); ev.ts_ms = Date.now(); p.emit(ev); n++ }
    }, 10)
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
    clearInterval(tick)
    const after = threadTimes()
    let sinkNs = 0
    for (const [t, v] of after) if (t !== main) sinkNs += v - (before.get(t) ?? 0)
    const batchesInserted = p.stats().insertedBatches
    await p.flush()
    const row = JSON.parse(await p.query('SELECT count() AS n, uniqExact(event_id) AS u FROM cost_events')) as { n: number | string, u: number | string }
    await p.close()
    return { insertMs, events: n, sinkUsPerEvent: sinkNs / 1000 / n, sinkMsPerSec: sinkNs / 1e6 / seconds, batchesInserted, stored: Number(row.n), unique: Number(row.u) }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

function child (rate: number, seconds: number, insertMs: number): Promise<CaseResult> {
  return runChildJson<CaseResult>(fileURLToPath(import.meta.url), ['--case', String(insertMs), '--rate', String(rate), '--seconds', String(seconds)], `case insertMs ${insertMs}`)
}

async function main (): Promise<number> {
  const { values } = parseCli(USAGE, {
    case: { type: 'string' },
    rate: { type: 'string', default: '2000' },
    seconds: { type: 'string', default: '60' },
    rounds: { type: 'string', default: '2' },
    'insert-ms': { type: 'string', default: '3000,30000' },
  })
  const rate = cliNumber(USAGE, 'rate', values.rate, 1)
  const seconds = cliNumber(USAGE, 'seconds', values.seconds, 1)
  if (values.case !== undefined) { process.stdout.write(JSON.stringify(await runCase(rate, seconds, cliNumber(USAGE, 'case', values.case, 0))) + '\n'); return 0 }
  const list = values['insert-ms'].split(',').map((v) => cliNumber(USAGE, 'insert-ms', v, 0))
  const rounds = cliNumber(USAGE, 'rounds', values.rounds, 1)
  const results = new Map<number, CaseResult[]>(list.map((ms) => [ms, []]))
  for (let r = 1; r <= rounds; r++) {
    for (const ms of list) {
      const res = await child(rate, seconds, ms)
      results.get(ms)?.push(res)
      console.log(`round ${r} insertMs ${ms}: ${res.sinkUsPerEvent.toFixed(1)} µs/event (${res.sinkMsPerSec.toFixed(0)} ms/s), ${res.batchesInserted} batches inserted, stored ${res.stored} / unique ${res.unique} of ${res.events}`)
    }
  }
  const cmd = `npm run bench:cost-rate -- --rate ${rate} --seconds ${seconds} --rounds ${rounds} --insert-ms ${list.join(',')}`
  const lines = [
    `- command: \`${cmd}\` (perf/bench-cost-rate.ts); flushMs 1000 (default), embedded store in ${tmpdir()}`,
    `- machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, node ${process.version}`,
    '',
    `| insertMs | sink + ClickHouse CPU per event, per round | ms of CPU per second | batches inserted during the ${seconds} s | stored / unique / emitted |`,
    '|---|---|---|---|---|',
    ...list.map((ms) => {
      const rs = results.get(ms) ?? []
      const dflt = ms === defaultInsertMs({ kind: 'embedded', dataDir: '' }) ? ' (embedded default)' : ms === defaultInsertMs({ kind: 'http', url: '' }) ? ' (server default)' : ''
      return `| ${ms}${dflt} | ${rs.map((x) => x.sinkUsPerEvent.toFixed(1)).join(' / ')} µs | ${rs.map((x) => x.sinkMsPerSec.toFixed(0)).join(' / ')} | ${rs.map((x) => x.batchesInserted).join(' / ')} | ${rs.map((x) => `${x.stored} / ${x.unique} / ${x.events}`).join('; ')} |`
    }),
  ]
  const out = join(packageRoot(), 'perf', 'RESULTS.md')
  appendFileSync(out, `\n## Cost pipeline at a steady ${rate} events/s, by insertMs, ${new Date().toISOString()}\n\n${lines.join('\n')}\n`)
  console.log(lines.join('\n'))
  console.log(`\nappended to ${out}`)
  return 0
}

runMain(main)
