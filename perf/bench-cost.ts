// Cost pipeline benchmark, into embedded ClickHouse (chDB), spool included
// (every batch is written and fsynced before its insert, deleted after).
//
//   1. emit(): request-path cost, ns per call. p50 is the mean of groups of
//      32 calls (one clock read per group); p99 / p99.9 / max time single
//      calls, so they include one performance.now() (~30-60 ns). Allocation:
//      heap growth and GCs over untimed emits.
//   2. sink throughput: events/s from the first emit until flush() resolved
//      (everything acknowledged by ClickHouse), producer throttled to the
//      ring so nothing is dropped. Run unpinned and pinned: the producer
//      (main thread) on CPU 0, every other thread of the process on CPU 1 —
//      so "events/s pinned" is what the sink sustains on ONE core. Every
//      other thread, not just the sink thread: chdb/connection runs
//      statements on libuv's thread pool (queryAsync), and the ClickHouse
//      threads those start inherit the libuv threads' affinity, not the sink
//      thread's (seen in /proc/self/task/*/status). CPU is split from /proc:
//      the main thread (producer + emit) vs everything else (sink thread,
//      ClickHouse threads, fs, GC helpers) = "sink CPU"; the part spent by
//      threads allowed only on the sink's CPU is shown as a check.
//   3. freshness: at a steady 20k events/s, a marker event is emitted and a
//      query for it sent at once (through the sink, which inserts what is
//      pending first): time from emit to a result that holds it.
//
// Each case runs in its own child process (libchdb binds one data directory
// per process). Run: npm run bench:cost  (node dist/perf/bench-cost.js)

import { execFileSync } from 'node:child_process'
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance, PerformanceObserver } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { CostPipeline } from '../src/cost/cost-pipeline.js'
import type { CostEvent } from '../src/cost/cost-event.js'
import { uuidv7 } from '../src/cost/uuidv7.js'
import { loadAffinity, packageRoot } from '../src/runtime/affinity.js'
import { runChildJson } from './child-json.js'
import { cliChoice, parseCli } from './cli-args.js'

const THROUGHPUT_EVENTS = Number(process.env.BENCH_COST_EVENTS ?? 3_000_000)
/** Pipeline default unless BENCH_COST_BATCH is set. */
const USAGE = `usage: node dist/perf/bench-cost.js   (npm run bench:cost; env BENCH_COST_BATCH=N sets cost.batchRows)
  --case C   run one case (emit, throughput or freshness) in this process and print its JSON
  --pin      with --case throughput: main thread on one CPU, every other thread on the other
  --help     this text`

const BATCH_ROWS = process.env.BENCH_COST_BATCH === undefined ? undefined : Number(process.env.BENCH_COST_BATCH)
const PRODUCER_CPU = 0
const SINK_CPU = 1

function templates (n: number): CostEvent[] {
  const out: CostEvent[] = []
  for (let i = 0; i < n; i++) {
    out.push({
      event_id: '', ts_ms: 0, tenant_id: `tenant-${i % 50}`, route: i % 3 === 0 ? 'ws:/v2/models/{m}/infer' : 'http:/v2/models/{m}/infer',
      model_id: ['tiny-classifier', 'ranker', 'heavy-encoder'][i % 3] as string, model_version: String(1 + (i % 2)), variant: 'default',
      tier: ['shared', 'premium_shared', 'semi_isolated', 'dedicated'][i % 4] as string, service_class: ['shared', 'premium_shared', 'heavy'][i % 3] as string,
      model_class: ['light', 'mid', 'heavy'][i % 3] as string, status: i % 20 === 0 ? 'tenant_concurrency' : 'ok', http_status: i % 20 === 0 ? 429 : 200,
      queue_wait_ms: (i % 97) * 0.37, inference_ms: 0.01 + (i % 13) * 0.173, batch_rows: 8, rows: 1 + (i % 4), compute_seconds: (1 + (i % 4)) * 0.0000117 * (1 + (i % 7)),
      cache_hit: i % 11 === 0, fallback: false, degraded: i % 31 === 0, cost_estimate_usd: 0.000002 + (i % 7) * 0.0000013, price_version: '2025-01',
      cost_center: `cc-${i % 5}`, region: 'eu-west-1', node_id: 'bench-node',
    })
  }
  return out
}

async function open (dir: string, opts: { flushMs?: number } = {}): Promise<CostPipeline> {
  return await CostPipeline.start({
    backend: { kind: 'embedded', dataDir: join(dir, 'data') }, spoolDir: join(dir, 'spool'), ...(BATCH_ROWS === undefined ? {} : { batchRows: BATCH_ROWS }), ...opts,
  })
}

/** Every thread of this process onto the sink's CPU (threads started later inherit it), then the producer back to its own. */
function pinProcess (): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(SINK_CPU), String(process.pid)], { stdio: 'ignore' })
  ;(loadAffinity() as NonNullable<ReturnType<typeof loadAffinity>>).setThreadAffinity([PRODUCER_CPU])
}

/** utime + stime of one thread of this process, seconds (USER_HZ = 100). */
function threadCpu (tid: number | string): number {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

/** CPU seconds so far of every live thread allowed on exactly `cpu`, by thread id. */
function pinnedThreadsCpu (cpu: number): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const allowed = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1]
      if (allowed === String(cpu)) out.set(tid, threadCpu(tid))
    } catch {
      // the thread exited between the listing and the read
    }
  }
  return out
}

function processCpu (): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

const yieldNow = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Producer throttle: wait (sleeping, not spinning) until the ring is at most a quarter full. */
async function room (p: CostPipeline): Promise<void> {
  const cap = p.stats().ringCapacity
  if (p.stats().ringDepth <= cap / 2) { await yieldNow(); return }
  while (p.stats().ringDepth > cap / 4) await sleep(1)
}
const pct = (sorted: Float64Array, q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0

async function emitCase (dir: string): Promise<Record<string, number>> {
  const p = await open(dir)
  const ev = templates(4096)
  const now = Date.now()
  for (const e of ev) { e.event_id = uuidv7(now); e.ts_ms = now }
  // Warm up: optimised code, dictionary filled, pages allocated.
  for (let i = 0; i < 200_000; i++) { p.emit(ev[i & 4095] as CostEvent); if ((i & 1023) === 1023) await room(p) }
  const GROUP = 32
  const groups = new Float64Array(20_000)
  for (let g = 0; g < groups.length; g++) {
    const base = (g * GROUP) & 4095
    const t0 = performance.now()
    for (let k = 0; k < GROUP; k++) p.emit(ev[base + k] as CostEvent)
    groups[g] = (performance.now() - t0) * 1e6 / GROUP
    if ((g & 31) === 31) await room(p) // let pages come back; outside the timed region
  }
  const single = new Float64Array(500_000)
  for (let i = 0; i < single.length; i++) {
    const e = ev[i & 4095] as CostEvent
    const t0 = performance.now()
    p.emit(e)
    single[i] = (performance.now() - t0) * 1e6
    if ((i & 1023) === 1023) await room(p)
  }
  let gcs = 0
  const obs = new PerformanceObserver((list) => { gcs += list.getEntries().length })
  obs.observe({ entryTypes: ['gc'] })
  const heap0 = process.memoryUsage().heapUsed
  const N = 1_000_000
  for (let i = 0; i < N; i++) { p.emit(ev[i & 4095] as CostEvent); if ((i & 1023) === 1023) await room(p) }
  const heapDelta = process.memoryUsage().heapUsed - heap0
  obs.disconnect()
  const ids = 1_000_000
  const u0 = performance.now()
  for (let i = 0; i < ids; i++) uuidv7()
  const uuidNs = (performance.now() - u0) * 1e6 / ids
  await p.flush()
  const s = p.stats()
  await p.close()
  groups.sort()
  single.sort()
  return {
    p50: pct(groups, 0.5), p99group: pct(groups, 0.99), p50single: pct(single, 0.5), p99: pct(single, 0.99), p999: pct(single, 0.999), max: single[single.length - 1] ?? 0,
    heapBytesPerEmit: heapDelta / N, gcs, uuidNs, dropped: s.dropped, emitted: s.emitted, inserted: s.inserted,
  }
}

async function throughputCase (dir: string, pin: boolean): Promise<Record<string, number>> {
  const p = await open(dir)
  if (pin) pinProcess()
  const ev = templates(4096)
  const N = THROUGHPUT_EVENTS
  const onSinkCpu0 = pinnedThreadsCpu(SINK_CPU)
  const main0 = threadCpu(process.pid)
  const proc0 = processCpu()
  const t0 = performance.now()
  let i = 0
  while (i < N) {
    // Fill the ring up to half, then let the sink take pages.
    while (i < N && p.stats().ringDepth < p.stats().ringCapacity / 2) {
      const end = Math.min(N, i + 1024)
      for (; i < end; i++) {
        const e = ev[i & 4095] as CostEvent
        e.event_id = uuidv7()
        e.ts_ms = Date.now()
        p.emit(e)
      }
    }
    await room(p)
  }
  await p.flush()
  const secs = (performance.now() - t0) / 1000
  const mainCpu = threadCpu(process.pid) - main0
  const totalCpu = processCpu() - proc0
  let onSinkCpu = 0
  for (const [tid, cpu] of pinnedThreadsCpu(SINK_CPU)) onSinkCpu += cpu - (onSinkCpu0.get(tid) ?? 0)
  const s = p.stats()
  // Background merges go on after the last insert: count 3 idle seconds of them too.
  await sleep(3000)
  const settledSinkCpu = processCpu() - proc0 - (threadCpu(process.pid) - main0)
  const stored = JSON.parse(await p.query('SELECT count() AS n, uniqExact(event_id) AS u FROM cost_events')) as { n: number, u: number }
  await p.close()
  const sinkCpu = totalCpu - mainCpu
  return {
    events: N, secs, eventsPerSec: N / secs, mainCpu, sinkCpu, totalCpu, settledSinkCpu, onSinkCpu: pin ? onSinkCpu : Number.NaN,
    sinkUsPerEvent: sinkCpu * 1e6 / N, settledSinkUsPerEvent: settledSinkCpu * 1e6 / N, sinkCoreBusy: sinkCpu / secs,
    eventsPerSinkCpuSec: N / sinkCpu, mainNsPerEvent: mainCpu * 1e9 / N,
    batches: s.insertedBatches, lastInsertMs: s.lastInsertMs, dropped: s.dropped, stored: stored.n, unique: stored.u,
  }
}

async function freshnessCase (dir: string): Promise<Record<string, number>> {
  const p = await open(dir)
  const ev = templates(4096)
  const RATE = 20_000
  const SECONDS = 12
  // Every ~0.5 s a marker is emitted and a (fresh, the default) query for
  // it is sent at once, one at a time: the query inserts what is pending
  // first, so its latency is emit → readable, insertMs notwithstanding.
  const lat: number[] = []
  let misses = 0
  let inflight: Promise<void> | null = null
  const t0 = performance.now()
  let sent = 0
  let tick = 0
  while (performance.now() - t0 < SECONDS * 1000) {
    const due = Math.floor((performance.now() - t0) / 1000 * RATE)
    for (; sent < due; sent++) {
      const e = ev[sent & 4095] as CostEvent
      e.event_id = uuidv7()
      e.ts_ms = Date.now()
      p.emit(e)
    }
    if (tick++ % 50 === 0 && inflight === null) {
      const id = uuidv7()
      const at = performance.now()
      p.emit({ ...(ev[0] as CostEvent), event_id: id, tenant_id: 'fresh-marker', ts_ms: Date.now() })
      inflight = p.query(`SELECT count() AS n FROM cost_events WHERE event_id = '${id}'`).then((r) => {
        if (Number((JSON.parse(r) as { n: unknown }).n) === 1) lat.push(performance.now() - at)
        else misses++
        inflight = null
      })
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  await inflight
  await p.close()
  const sorted = Float64Array.from(lat).sort()
  return { markers: lat.length, misses, rate: RATE, p50: pct(sorted, 0.5), p99: pct(sorted, 0.99), max: sorted[sorted.length - 1] ?? 0 }
}

async function child (which: string, pin: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fairway-bench-cost-'))
  try {
    const r = which === 'emit' ? await emitCase(dir) : which === 'freshness' ? await freshnessCase(dir) : await throughputCase(dir, pin)
    process.stdout.write(JSON.stringify(r) + '\n')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

function run (which: string, pin: boolean): Promise<Record<string, number>> {
  return runChildJson<Record<string, number>>(fileURLToPath(import.meta.url), ['--case', which, ...(pin ? ['--pin'] : [])], `bench case ${which}`)
}

/** Pinning needs two CPUs, taskset and the affinity addon. */
function canPin (): boolean {
  try { execFileSync('taskset', ['-c', '0', 'true']) } catch { return false }
  return cpus().length > SINK_CPU && loadAffinity() !== null
}

const f = (x: number | undefined, d = 0): string => (x ?? 0).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })

async function main (): Promise<void> {
  const { values } = parseCli(USAGE, { case: { type: 'string' }, pin: { type: 'boolean', default: false } })
  if (values.case !== undefined) { await child(cliChoice(USAGE, 'case', values.case, ['emit', 'throughput', 'freshness']), values.pin); return }
  const lines: string[] = []
  const out = (line: string): void => { console.log(line); lines.push(line) }
  out(`fairway cost pipeline benchmark — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? '?'}, batchRows ${BATCH_ROWS ?? 'default'}, spool on ${tmpdir()}, load average before ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`)
  const e = await run('emit', false)
  const free = await run('throughput', false)
  const pinned = canPin() ? await run('throughput', true) : null
  const fresh = await run('freshness', false)

  out('| emit() (request path) | value | goal |')
  out('|---|---|---|')
  out(`| p50, ns/call (mean of 32-call groups) | ${f(e.p50)} | |`)
  out(`| p99, ns/call (single-call timing, includes the clock read) | ${f(e.p99)} | < 5,000 |`)
  out(`| p99.9 / max, ns/call | ${f(e.p999)} / ${f(e.max)} | |`)
  out(`| heap growth per emit, bytes (1M untimed emits) / GCs | ${f(e.heapBytesPerEmit, 2)} / ${f(e.gcs)} | |`)
  out(`| uuidv7(), ns/id | ${f(e.uuidNs)} | |`)
  out(`| dropped / emitted / inserted | ${f(e.dropped)} / ${f(e.emitted)} / ${f(e.inserted)} | 0 dropped |`)
  out('')
  out(`| sink throughput into embedded ClickHouse, spool included | unpinned | pinned: producer CPU ${PRODUCER_CPU}, sink + ClickHouse CPU ${SINK_CPU} | goal |`)
  out('|---|---|---|---|')
  const both = (k: string, d = 0): string => `${f(free[k], d)} | ${pinned === null ? 'n/a' : f(pinned[k], d)}`
  out(`| events | ${both('events')} | |`)
  out(`| wall seconds, first emit → all acknowledged | ${both('secs', 2)} | |`)
  out(`| events/s (wall) | ${both('eventsPerSec')} | ≥ 200,000 on one core (pinned) |`)
  out(`| sink CPU seconds (all threads but the producer: sink thread, ClickHouse, fs, GC helpers) | ${both('sinkCpu', 2)} | |`)
  out(`| … of which threads pinned to the sink's CPU | n/a | ${pinned === null ? 'n/a' : f(pinned.onSinkCpu, 2)} | |`)
  out(`| sink CPU-seconds per wall second (1.00 = one core busy) | ${both('sinkCoreBusy', 2)} | |`)
  out(`| sink CPU µs per event | ${both('sinkUsPerEvent', 2)} | |`)
  out(`| sink CPU µs per event, 3 s of merges after the run included | ${both('settledSinkUsPerEvent', 2)} | |`)
  out(`| events per sink CPU-second | ${both('eventsPerSinkCpuSec')} | ≥ 200,000 |`)
  out(`| main thread ns/event (producer: uuidv7 + emit) | ${both('mainNsPerEvent')} | |`)
  out(`| batches / last insert ms | ${f(free.batches)} / ${f(free.lastInsertMs, 1)} | ${pinned === null ? 'n/a' : `${f(pinned.batches)} / ${f(pinned.lastInsertMs, 1)}`} | |`)
  out(`| stored rows / unique ids / dropped | ${f(free.stored)} / ${f(free.unique)} / ${f(free.dropped)} | ${pinned === null ? 'n/a' : `${f(pinned.stored)} / ${f(pinned.unique)} / ${f(pinned.dropped)}`} | exactly once |`)
  out('')
  out(`| freshness, emit → a query sent at once returns it (${f(fresh.rate)} events/s, default flushMs and insertMs, ${f(fresh.markers)} markers, ${f(fresh.misses)} not returned) | ms | goal |`)
  out('|---|---|---|')
  out(`| p50 | ${f(fresh.p50)} | |`)
  out(`| p99 | ${f(fresh.p99)} | < 5,000 |`)
  out(`| max | ${f(fresh.max)} | |`)
  out(`\nLoad average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (other jobs on the machine move wall-clock figures; CPU-per-event figures much less).`)
  const results = join(packageRoot(), 'perf', 'RESULTS.md')
  appendFileSync(results, `\n## Cost pipeline (issue #4), ${new Date().toISOString()}\n\n- command: \`npm run build && npm run bench:cost\` (perf/bench-cost.ts)\n\n${lines.join('\n')}\n`)
  console.log(`\nappended to ${results}`)
}

main().catch((err: unknown) => { console.error(err); process.exit(1) })
