// Background threads at a higher nice value than the request path.
//
// Why: besides the gateway thread and the inference workers, a fairway
// process runs dozens of threads: the cost sink, embedded ClickHouse (its
// query threads on libuv's pool, merges, its MemoryWorker at nice -20),
// libuv's pool, V8's helpers. On a small machine their bursts (a ClickHouse
// insert and the merges after it) take the CPU from the request path for
// milliseconds at a time. Measured on the 2-vCPU VM, noisy-neighbour
// scenario (bench:fairness --only noisy --background-nice 10|0, interleaved,
// 6 repetitions each): victims' p99 alone, median, 6.86 ms with every thread
// at nice 0 and 5.99 ms with the background at 10; with the aggressor 12.7
// vs 10.8 ms (perf/RESULTS.md).
//
// How: no thread of that set can be told to start reniced (ClickHouse and
// libuv create theirs on demand), so a sweep of /proc/self/task every second
// renices each thread that is not the gateway (tid = pid) and not an
// inference worker (workers name themselves "fw:<class>" first thing; a
// thread is reniced only once it has been seen in two sweeps, so a new
// worker has a second to do that). Threads created by a reniced thread
// inherit its nice value on Linux. Cost: one readdir of /proc/self/task per
// second plus one small read per new thread; nothing on the request path.
//
// Trade-off: a background thread at nice N competing with request threads
// gets about 1.25^-N of a nice-0 thread's CPU share (N = 10: ~10%). The cost
// sink needs ~3 µs of CPU per event, i.e. ~6% of a core at 20,000 events/s,
// so the default of 10 leaves it enough on a saturated machine where 19
// (~1.5%) would let its ring fill and drop events.

import { readdirSync, readFileSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'

/** Name prefix of inference worker threads (set by workers/inference-worker.ts). */
export const WORKER_THREAD_PREFIX = 'fw:'

const SWEEP_MS = 1000

export class BackgroundNice {
  readonly nice: number
  /** Threads reniced, already nicer, exempt (workers) or gone: not looked at again while they live. */
  private readonly done = new Set<number>()
  /** Threads seen once: reniced at the next sweep unless they named themselves meanwhile. */
  private seen = new Set<number>()
  private timer: NodeJS.Timeout | null = null

  constructor (nice: number) {
    this.nice = nice
  }

  start (): void {
    this.sweep()
    this.timer = setInterval(() => { this.sweep() }, SWEEP_MS)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** One pass over the process's threads. */
  sweep (): void {
    let tids: string[]
    try {
      tids = readdirSync('/proc/self/task')
    } catch {
      return // not Linux, or /proc not mounted: nothing to do
    }
    const seen = new Set<number>()
    const live = new Set<number>()
    for (const name of tids) {
      const tid = Number(name)
      live.add(tid)
      if (tid === process.pid || this.done.has(tid)) continue
      let comm: string
      try {
        comm = readFileSync(`/proc/self/task/${name}/comm`, 'utf8')
      } catch {
        continue // exited meanwhile
      }
      if (comm.startsWith(WORKER_THREAD_PREFIX)) { this.done.add(tid); continue }
      if (!this.seen.has(tid)) { seen.add(tid); continue }
      try {
        // Only ever raised: a thread already nicer than that stays so.
        if (getPriority(tid) < this.nice) setPriority(tid, this.nice)
      } catch {
        // Exited meanwhile: nothing to do.
      }
      this.done.add(tid)
    }
    this.seen = seen
    // Thread ids are reused: forget the ones that exited.
    for (const tid of this.done) if (!live.has(tid)) this.done.delete(tid)
  }
}
