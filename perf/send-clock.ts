// Sub-millisecond send timing for a load-generator thread.
//
// Node's timers have millisecond granularity and fire up to ~1 ms late (the
// event loop sleeps in epoll with a whole-millisecond timeout), so a generator
// driven by setTimeout sends most requests late and that lateness, rightly
// counted from the intended send time, swamps a sub-millisecond server. Here a
// tiny helper thread sleeps in Atomics.wait with a fractional-millisecond
// timeout (a futex with a timespec: tens of µs of slack, no CPU while
// waiting) and wakes the generator thread through Atomics.waitAsync, which
// resumes it via its event loop at once.
//
// Handshake on three Int32 slots and one Float64 (the due time, epoch ms):
//   generator: write DUE, then Atomics.add(ARM) + notify(ARM)  ("wake me at DUE")
//   helper:    sees a new ARM value, waits on ARM until DUE (an earlier re-arm
//              interrupts the wait), then Atomics.add(FIRE) + notify(FIRE)
//   generator: Atomics.waitAsync(FIRE, value read BEFORE arming) resolves
// Reading FIRE before arming means a fire that lands between the arm and the
// waitAsync is seen as "not-equal" at once, never lost. A fire for a
// superseded arm only wakes the generator early; its callback sends nothing
// that is not due and arms again. STOP ends the helper.

import { Worker } from 'node:worker_threads'
import { nowMs } from './loadgen-common.js'

const ARM = 0
const FIRE = 1
const STOP = 2

// Plain JavaScript so it runs the same under tsc output and tap's TS loader.
const HELPER = `
const { workerData } = require('node:worker_threads')
const { performance } = require('node:perf_hooks')
const i32 = new Int32Array(workerData, 0, 4)
const due = new Float64Array(workerData, 16, 1)
let fired = 0
while (Atomics.load(i32, ${STOP}) === 0) {
  const arm = Atomics.load(i32, ${ARM})
  if (arm === fired) { Atomics.wait(i32, ${ARM}, arm); continue }
  const wait = due[0] - (performance.timeOrigin + performance.now())
  if (wait > 0) { Atomics.wait(i32, ${ARM}, arm, wait); continue }
  fired = arm
  Atomics.add(i32, ${FIRE}, 1)
  Atomics.notify(i32, ${FIRE})
}
`

/**
 * Calls back at (or tens of µs after) a given epoch-ms time. One pending
 * time at a time: `at` replaces the previous one.
 */
export class SendClock {
  private readonly sab = new SharedArrayBuffer(24)
  private readonly i32 = new Int32Array(this.sab, 0, 4)
  private readonly due = new Float64Array(this.sab, 16, 1)
  private readonly helper: Worker
  private listening = false
  private stopped = false

  constructor (private readonly callback: () => void) {
    this.helper = new Worker(HELPER, { eval: true, workerData: this.sab })
    this.helper.unref()
  }

  /** Calls the callback once the epoch-ms time `dueMs` has passed (at once if it has). */
  at (dueMs: number): void {
    if (this.stopped) return
    if (dueMs <= nowMs()) { setImmediate(this.callback); return }
    const seen = Atomics.load(this.i32, FIRE)
    this.due[0] = dueMs
    Atomics.add(this.i32, ARM, 1)
    Atomics.notify(this.i32, ARM)
    if (!this.listening) this.listen(seen)
  }

  private listen (seen: number): void {
    this.listening = true
    const r = Atomics.waitAsync(this.i32, FIRE, seen)
    if (r.async) void r.value.then(this.fired)
    else setImmediate(this.fired)
  }

  private readonly fired = (): void => {
    this.listening = false
    if (!this.stopped) this.callback()
  }

  stop (): void {
    this.stopped = true
    Atomics.store(this.i32, STOP, 1)
    // Also move ARM, so a helper about to wait on the old value returns at once.
    Atomics.add(this.i32, ARM, 1)
    Atomics.notify(this.i32, ARM)
  }
}
