// Admission microbenchmark: ns per admit/reject decision on the shared table,
// single thread and contended (one thread per core on the same tenant row),
// and whether the decision path allocates (V8 heap growth and GC count over
// the timed loop).
//
// Method: a decision (~tens of ns) is shorter than the clock's overhead, so
// each sample times a group of GROUP decisions with performance.now() and
// divides; p50/p99 are over those per-group means. Each decision is a full
// admit (+ dequeued + release when admitted) on a tenant at its cap half the
// time, so admits and rejects are both measured.
//
// Run: npm run bench:admission   (node dist/perf/bench-admission.js)

import { cpus } from 'node:os'
import { performance, PerformanceObserver } from 'node:perf_hooks'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { AdmissionTable, Reject } from '../src/admission/admission-table.js'
import { parseCli } from './cli-args.js'

const GROUP = 100
const SAMPLES = 20_000

interface Result { p50: number, p99: number, mean: number, decisions: number, admitted: number, heapDeltaBytes: number, gcs: number }

/** Warms the decision path up (so it is optimised), then starts counting GCs and heap from here. */
function warmAndObserve (a: AdmissionTable): { heap0: number, gcs: () => number, stop: () => void } {
  for (let i = 0; i < 200_000; i++) if (a.admit(0, 0, a.nowUs()) === Reject.None) { a.dequeued(0, 0); a.release(0) }
  let gcs = 0
  const obs = new PerformanceObserver((list) => { gcs += list.getEntries().length })
  obs.observe({ entryTypes: ['gc'] })
  return { heap0: process.memoryUsage().heapUsed, gcs: () => gcs, stop: () => { obs.disconnect() } }
}

function run (a: AdmissionTable): Result {
  const times = new Float64Array(SAMPLES)
  let admitted = 0
  const probe = warmAndObserve(a)
  for (let s = 0; s < SAMPLES; s++) {
    const t0 = performance.now()
    for (let i = 0; i < GROUP; i++) {
      const now = a.nowUs()
      // Two admits back to back: with cap 1 the second is a refusal.
      if (a.admit(0, 0, now) === Reject.None) {
        admitted++
        a.admit(0, 0, now)
        a.dequeued(0, 0)
        a.release(0)
      }
    }
    times[s] = (performance.now() - t0) * 1e6 / (GROUP * 2)
  }
  const heapDeltaBytes = process.memoryUsage().heapUsed - probe.heap0
  probe.stop()
  const gcs = probe.gcs()
  const sorted = Float64Array.from(times).sort()
  const mean = times.reduce((x, y) => x + y, 0) / SAMPLES
  return { p50: sorted[Math.floor(SAMPLES * 0.5)] ?? 0, p99: sorted[Math.floor(SAMPLES * 0.99)] ?? 0, mean, decisions: SAMPLES * GROUP * 2, admitted, heapDeltaBytes, gcs }
}

function table (buffer?: SharedArrayBuffer): AdmissionTable {
  const a = new AdmissionTable(1, 1, buffer)
  if (buffer === undefined) {
    a.setTenantPolicy(0, { concurrency: 1, queueDepth: 1, ratePerSecond: 0, burst: 1 })
    a.setClassShed(0, 1_000_000)
  }
  return a
}

/** Heap growth over `n` untimed decisions: the allocation check (timing itself allocates). */
function allocationCheck (n: number): { bytesPerDecision: number, gcs: number } {
  const a = table()
  const probe = warmAndObserve(a)
  for (let i = 0; i < n; i++) {
    const now = a.nowUs()
    if (a.admit(0, 0, now) === Reject.None) { a.admit(0, 0, now); a.dequeued(0, 0); a.release(0) }
  }
  const delta = process.memoryUsage().heapUsed - probe.heap0
  probe.stop()
  return { bytesPerDecision: delta / (n * 2), gcs: probe.gcs() }
}

if (isMainThread) {
  parseCli('usage: node dist/perf/bench-admission.js   (npm run bench:admission; no options)\n  --help  this text', {})
  const alloc = allocationCheck(2_000_000)
  const single = run(table())
  const shared = table()
  const threads = Math.max(2, cpus().length)
  const contended = await Promise.all(Array.from({ length: threads }, () => new Promise<Result>((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: shared.buffer })
    w.once('message', resolve)
    w.once('error', reject)
  })))
  const fmt = (r: Result): string => `${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.mean.toFixed(1)} | ${r.decisions} | ${r.heapDeltaBytes} | ${r.gcs}`
  console.log('| case | p50 ns/decision | p99 ns/decision | mean | decisions | heap delta (bytes) | GCs during loop |')
  console.log('|---|---|---|---|---|---|---|')
  console.log(`| single thread | ${fmt(single)} |`)
  contended.forEach((r, i) => { console.log(`| contended, thread ${i + 1} of ${threads} | ${fmt(r)} |`) })
  console.log(`\nallocation check: ${alloc.bytesPerDecision.toFixed(4)} heap bytes per decision over 4,000,000 untimed decisions, ${alloc.gcs} GCs`)
  console.log(`in flight after: ${shared.inflight(0)}, queued after: ${shared.queued(0)} (must be 0)`)
} else {
  parentPort?.postMessage(run(table(workerData as SharedArrayBuffer)))
}
