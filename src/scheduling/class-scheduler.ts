// Per-service-class scheduler: weighted fair queuing across tenants, dynamic
// batching per model version, deadlines.
//
// Order: tenants are flows of a FairQueue (VTC-style virtual counters), each
// request charged its estimated cost (rows × the unit's measured µs per row),
// corrected once the batch's real time is known. Batching: when a worker of
// the class is free, the fair head starts a batch and the following fair
// heads join it while they are for the same model version and fit in
// maxBatchSize rows. Dispatch to a worker costs more than a small model's
// inference (~60 µs vs ~10 µs here), so batching is what keeps the per-request
// cost on the gateway thread small. While all workers are busy, arrivals
// accumulate into the next batch. A model with a batching window
// (maxQueueDelayUs > 0) also holds a FREE worker back while the fair head's
// unit has fewer than maxBatchSize rows queued, until the earliest hold limit
// of the queued jobs: arrival + the route's maxBatchWaitMs (the model's window
// capped by the tenant's maxBatchWaitUs), or deadline − the estimated time of
// a full batch of the unit, whichever comes first. The minimum is taken over
// every queued job, not only those that will join the head's batch: it is
// kept in O(1) per arrival that way, and a job that may not wait (tenant cap
// 0, deadline close) is never kept waiting by an idling worker. Arrivals
// re-check fullness (each schedules a pump); the fair order still decides
// which jobs join when the batch leaves.
// Timers: one per class, armed for the earliest of the queued deadlines and
// the end of a hold, re-armed only when an earlier time comes up (a hold, a
// shorter deadline), not per request; once the queue empties it is left to
// fire once, harmlessly, rather than cleared and set again per request. Node
// timers tick in whole milliseconds (a timer may fire up to a tick early,
// which just re-arms it, or late): deadlines are enforced within about a
// millisecond (expired requests answered 504, never run; dispatch re-checks),
// and a hold shorter than 1 ms lasts about 1 ms unless an arrival filling the
// batch or a completion ends it first. A held worker is not lent out.
// Hot path (every request): enqueue and pump allocate nothing but the batch
// buffer; the deadline/hold bounds are plain numbers kept in O(1), callbacks
// are closures made once, and a hold costs one Node timer per batch, so a
// window adds no per-request allocation. Each job leaves the queue (dequeued)
// and is answered (done) exactly once: at dispatch, by the deadline rescan,
// or when found expired at dispatch.
// Lending: a class whose queue is empty lends its free workers to the classes
// in its `lendTo` list (the one that has received the least lent time per unit
// of class weight first): it forms a batch from the borrower's fair queue and
// runs it on its own pool (its workers load the borrower's models too). Its
// own work takes the worker back at the next batch boundary, because a free
// worker always serves its own queue first. A lender only takes a FULL batch
// (maxBatchSize rows of the head's model version queued): a part-filled batch
// waits for the borrower's own worker, where it keeps growing. Splitting small
// batches across workers costs a wake-up per batch on both threads: on the
// demo platform, tiny-model requests lent out at 16,000 req/s took 1.09
// cores against 0.84 without lending, and failed the p99 bound that the
// unlent run passed (measured with bench:overhead). Heavy models, whose
// requests fill a batch, are lent at once as before.

import { performance } from 'node:perf_hooks'
import { Reject, type AdmissionTable } from '../admission/admission-table.js'
import type { ExecutableUnit, Route } from '../control-plane/registry.js'
import { FairwayError, fwError } from '../errors.js'
import type { BatchPool } from '../runtime/batch-pool.js'
import { workerError } from '../runtime/class-pool.js'
import { FairQueue } from './fair-queue.js'

/**
 * Time and timers of a scheduler, injected so tests can drive batching windows
 * and deadlines deterministically. `now()` is in ms on the same time base as
 * Job.enqueuedAt and Job.deadline (performance.now() in the server).
 */
export interface SchedulerClock {
  now (): number
  /** Calls `fn` once, no earlier than `ms` from now (a negative `ms` counts as 0). */
  setTimer (fn: () => void, ms: number): { close (): void }
}

const realClock: SchedulerClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
}

export interface BatchInfo {
  /** Rows in the whole batch this job ran in. */
  readonly batchRows: number
  /** Worker-measured inference time of the whole batch, ns. */
  readonly inferenceNs: number
  /** Worker thread CPU time of the whole batch, ns. */
  readonly cpuNs: number
  /** Service class whose worker ran the batch (differs from the job's when lent). */
  readonly ranOn: string
  /** When the batch left the queue, on the scheduler clock (performance.now() in the server). */
  readonly dispatchedAt: number
}

export interface Job {
  /** Fair-queue flow: the tenant's slot. */
  readonly flow: number
  /** Estimated cost in µs; set by the scheduler at enqueue. */
  cost: number
  readonly route: Route
  readonly rows: number
  readonly input: Float32Array
  /** performance.now() at arrival. */
  readonly enqueuedAt: number
  /** performance.now() after which the job must not run. */
  readonly deadline: number
  /**
   * Called exactly once. On success `output` is the whole batch output and the
   * job's rows start at `offsetRows`; the callee copies what it needs. `batch`
   * describes the batch the job ran in (null when it did not complete).
   */
  done (err: FairwayError | null, output: Float32Array | null, offsetRows: number, batch: BatchInfo | null): void
}

interface Batch {
  readonly owner: ClassScheduler
  readonly dispatchedAt: number
  readonly unit: UnitState
  readonly jobs: Job[]
  readonly rows: number
}

interface UnitState {
  readonly unit: ExecutableUnit
  /** The model's maxBatchSize. */
  readonly maxRows: number
  /** Rows of this unit queued now: "is the batch full" without walking the queue. */
  queuedRows: number
  /** EWMA of measured µs per row (batch time / batch rows). */
  usPerRow: number
}

// Before the first measurement; replaced after one batch.
const INITIAL_US_PER_ROW = 20
const EWMA = 0.2

export interface SchedulerStats {
  /** Batches of this class's own requests (wherever they ran). */
  batches: number
  rows: number
  expired: number
  /** Worker time this class's workers spent on their own class's batches, ms. */
  ownBusyMs: number
  /** Worker time this class's workers spent on other classes' batches, ms. */
  lentBusyMs: number
  /** Batches of this class that ran on another class's workers. */
  borrowedBatches: number
  /** Worker time other classes lent to this one, ms. */
  borrowedMs: number
}

export class ClassScheduler {
  readonly pool: BatchPool
  readonly stats: SchedulerStats = { batches: 0, rows: 0, expired: 0, ownBusyMs: 0, lentBusyMs: 0, borrowedBatches: 0, borrowedMs: 0 }
  readonly startedAt = performance.now()
  /** Classes this one lends idle workers to, in order of preference. */
  private borrowers: ClassScheduler[] = []
  /** Classes that lend to this one (poked when this class is saturated). */
  private lenders: ClassScheduler[] = []
  private readonly queue: FairQueue<Job>
  private readonly units = new Map<string, UnitState>()
  private readonly admission: AdmissionTable
  private readonly classSlot: number
  private running = 0
  private queuedCost = 0
  private pumpScheduled = false

  /** False sends every request as its own worker task (the batching benchmark's baseline). */
  private readonly batching: boolean
  /** Some unit has a batching window; without one the class never holds a worker (nor scans for it). */
  private readonly windowed: boolean
  private readonly clock: SchedulerClock

  // Lower bounds, over the queued jobs, of their deadlines and of their hold
  // limits. An arrival lowers them in O(1); a job leaving may leave them too
  // low, never too high, which costs at most an early timer or a rescan (one
  // pass over the queue that also answers expired jobs). `boundsExact`: no
  // job left since the last rescan. Both are Infinity while the queue is empty.
  private nextDeadline = Infinity
  private minHoldLimit = Infinity
  private boundsExact = true
  /** `now` of the rescan in progress, for the removeWhere predicate (a field, so that predicate is one closure made once). */
  private scanNow = 0
  /** The class's one timer, armed to fire at `timerAt` (Infinity: none). */
  private timer: { close (): void } | null = null
  private stopped = false
  private timerAt = Infinity

  constructor (pool: BatchPool, units: readonly ExecutableUnit[], admission: AdmissionTable, classSlot: number, weightOf: (flow: number) => number, batching = true, clock: SchedulerClock = realClock) {
    this.pool = pool
    this.batching = batching
    this.clock = clock
    this.admission = admission
    this.classSlot = classSlot
    this.queue = new FairQueue<Job>(weightOf)
    for (const unit of units) this.units.set(unit.key, { unit, maxRows: unit.model.maxBatchSize, queuedRows: 0, usPerRow: INITIAL_US_PER_ROW })
    this.windowed = batching && units.some((u) => u.model.maxQueueDelayUs > 0)
  }

  get queued (): number {
    return this.queue.size
  }

  get busyWorkers (): number {
    return this.running
  }

  /** Rough time for the class to work off what is queued now, ms (for Retry-After hints). */
  estimatedDrainMs (): number {
    return this.queuedCost / this.pool.capacity / 1000
  }

  /**
   * The job was admitted (AdmissionTable counted it queued); it leaves through
   * dequeue exactly once. Runs once per request: O(log tenants) in the fair
   * queue, no allocation, at most one timer (re)armed.
   */
  enqueue (job: Job): void {
    const u = this.units.get(job.route.unitKey)
    if (u === undefined) {
      this.admission.dequeued(job.flow, this.classSlot)
      job.done(fwError('FW_ERR_INTERNAL'), null, 0, null)
      return
    }
    job.cost = job.rows * u.usPerRow
    this.queuedCost += job.cost
    u.queuedRows += job.rows
    this.queue.push(job)
    if (job.deadline < this.nextDeadline) this.nextDeadline = job.deadline
    if (this.windowed) {
      const limit = holdLimit(job, u)
      if (limit < this.minHoldLimit) this.minHoldLimit = limit
    }
    // With a free worker the pump decides (dispatch, or hold) and arms the timer.
    if (this.running < this.pool.capacity) {
      this.schedulePump()
    } else {
      this.arm(this.nextDeadline)
      for (const l of this.lenders) if (l.running < l.pool.capacity) l.schedulePump()
    }
  }

  /** Wires work-conserving lending: this class's idle workers serve `borrowers`. */
  lendTo (borrowers: readonly ClassScheduler[]): void {
    this.borrowers = [...borrowers]
    for (const b of borrowers) b.lenders.push(this)
  }

  /** Worker time of this class that was neither used for its own work nor lent, ms. */
  idleMs (): number {
    return Math.max(0, this.pool.capacity * (performance.now() - this.startedAt) - this.stats.ownBusyMs - this.stats.lentBusyMs)
  }

  private schedulePump (): void {
    if (this.pumpScheduled) return
    this.pumpScheduled = true
    // Same-tick arrivals join the batch before it leaves.
    setImmediate(this.pumpNow)
  }

  private readonly pumpNow = (): void => {
    this.pumpScheduled = false
    this.pump()
  }

  /** Makes the class's timer fire no later than `at`; a no-op when it already will (the common case). */
  private arm (at: number): void {
    // After stop() (shutdown), batches failed by the closing pool still pump:
    // no new timer may keep the process alive for a queued deadline.
    if (this.stopped || at >= this.timerAt) return
    this.timer?.close()
    this.timerAt = at
    this.timer = this.clock.setTimer(this.onTimer, at - this.clock.now())
  }

  /** A deadline or the end of a hold may have come: answer expired jobs, then dispatch (the pump re-arms). */
  private readonly onTimer = (): void => {
    this.timer = null
    this.timerAt = Infinity
    const now = this.clock.now()
    if (this.nextDeadline <= now) this.rescan(now)
    this.pump()
  }

  /** Answers expired jobs (504) and recomputes the exact bounds over the rest. O(queued + tenants). */
  private rescan (now: number): void {
    this.scanNow = now
    this.nextDeadline = Infinity
    this.minHoldLimit = Infinity
    this.queue.removeWhere(this.expiredElseBound, this.expire)
    this.boundsExact = true
  }

  private readonly expiredElseBound = (job: Job): boolean => {
    if (job.deadline <= this.scanNow) return true
    if (job.deadline < this.nextDeadline) this.nextDeadline = job.deadline
    if (this.windowed) {
      const limit = holdLimit(job, this.units.get(job.route.unitKey) as UnitState)
      if (limit < this.minHoldLimit) this.minHoldLimit = limit
    }
    return false
  }

  /**
   * When the fair head's batch may leave a free worker; ≤ now: at once. It is
   * held while its unit has fewer than maxBatchSize rows queued and every
   * queued job is within its hold limit (see the header).
   */
  private releaseAt (now: number): number {
    if (!this.windowed) return now
    for (;;) {
      const head = this.queue.peek()
      if (head === null) return now
      const u = this.units.get(head.route.unitKey) as UnitState
      if (u.queuedRows >= u.maxRows) return now
      if (this.minHoldLimit > now || this.boundsExact) return this.minHoldLimit
      // The bound says "go" but may be stale: make it exact (expired jobs
      // leave on the way, maybe the head) and look again; at most once.
      this.rescan(now)
    }
  }

  private readonly expire = (job: Job): void => {
    this.leave(job, this.units.get(job.route.unitKey) as UnitState)
    this.stats.expired++
    this.admission.countReject(job.flow, Reject.DeadlineExceeded)
    const budget = job.deadline - job.enqueuedAt
    const err = fwError('FW_ERR_DEADLINE_EXCEEDED', budget >= 10 ? Math.round(budget) : Number(budget.toPrecision(2)))
    err.reason = 'deadline_exceeded'
    // The same hint as a class refusal: when the work queued now should be done.
    err.retryAfterMs = Math.max(1, Math.round(this.estimatedDrainMs()))
    job.done(err, null, 0, null)
  }

  /** pop() charged the flow for a job that will not run: refund, then expire. */
  private expireAfterPop (job: Job): void {
    this.queue.charge(job.flow, -job.cost)
    this.expire(job)
  }

  private leave (job: Job, u: UnitState): void {
    this.queuedCost -= job.cost
    u.queuedRows -= job.rows
    this.admission.dequeued(job.flow, this.classSlot)
    if (this.queue.size > 0) {
      this.boundsExact = false
    } else {
      this.nextDeadline = Infinity
      this.minHoldLimit = Infinity
      this.boundsExact = true
    }
  }

  private pump (): void {
    const now = this.clock.now()
    while (this.running < this.pool.capacity) {
      let batch: Batch | null = null
      if (this.queue.size > 0) {
        const at = this.releaseAt(now)
        // Holding: the free worker waits for this batch. It is not lent out
        // meanwhile: a lent batch (a heavy one takes ms) could keep the held
        // jobs far past their limits.
        if (at > now) { this.arm(at); break }
        batch = this.formBatch(now)
      }
      // Own work first: that is what takes a lent worker back.
      batch ??= this.borrowerByShare(now)?.formBatch(now) ?? null
      if (batch === null) break
      this.run(batch)
    }
    if (this.queue.size > 0) {
      this.arm(this.nextDeadline)
      // All own workers busy and work still waiting: ask idle lenders to help.
      if (this.running >= this.pool.capacity) for (const l of this.lenders) if (l.running < l.pool.capacity) l.schedulePump()
    }
  }

  /**
   * Among borrowers with queued work, the one that has received the least lent
   * time per unit of class weight: lent capacity is shared by class weights.
   */
  private borrowerByShare (now: number): ClassScheduler | null {
    let best: ClassScheduler | null = null
    let bestKey = Infinity
    for (const b of this.borrowers) {
      if (!b.fullBatchQueued()) continue
      const at = b.releaseAt(now)
      // The borrower holds its batch for a free worker (this one): wake it
      // when the hold ends; its pump then asks its lenders again.
      if (at > now) { b.arm(at); continue }
      const key = b.stats.borrowedMs / b.pool.serviceClass.weight
      if (key < bestKey) { best = b; bestKey = key }
    }
    return best
  }

  /** Some borrower has work queued (that this class's free worker might take). */
  private borrowersQueued (): boolean {
    for (const b of this.borrowers) if (b.queue.size > 0) return true
    return false
  }

  /** A full batch of the fair head's model version is queued: worth a lent worker. */
  private fullBatchQueued (): boolean {
    const head = this.queue.peek()
    if (head === null) return false
    const u = this.units.get(head.route.unitKey) as UnitState
    return !this.batching || u.queuedRows >= u.maxRows
  }

  /** Takes the next batch from this class's fair queue (null when empty). */
  private formBatch (now: number): Batch | null {
    let first: Job | null = null
    while (first === null) {
      const j = this.queue.pop()
      if (j === null) return null
      if (j.deadline <= now) this.expireAfterPop(j)
      else first = j
    }
    const unit = this.units.get(first.route.unitKey) as UnitState
    const maxRows = this.batching ? unit.maxRows : first.rows
    this.leave(first, unit)
    const jobs: Job[] = [first]
    let rows = first.rows
    for (let next = this.queue.peek(); next !== null && next.route.unitKey === first.route.unitKey && rows + next.rows <= maxRows; next = this.queue.peek()) {
      this.queue.pop()
      if (next.deadline <= now) { this.expireAfterPop(next); continue }
      this.leave(next, unit)
      jobs.push(next)
      rows += next.rows
    }
    this.stats.batches++
    this.stats.rows += rows
    // The jobs' inputs are copied once, by the pool, straight into the
    // worker's mailbox: no batch buffer here.
    return { owner: this, dispatchedAt: now, unit, jobs, rows }
  }

  /** Runs a batch (own or borrowed) on this class's pool. */
  private run (batch: Batch): void {
    this.running++
    const lent = batch.owner !== this
    if (lent) batch.owner.stats.borrowedBatches++
    // Worker busy time (lending stats, idle capacity) is wall time, not the
    // scheduler clock: it is reported to operators, never used to schedule.
    const t0 = performance.now()
    this.pool.run({ unit: batch.unit.unit.key, rows: batch.rows, parts: batch.jobs }).then((res) => {
      batch.owner.complete(batch, res.output, { batchRows: batch.rows, inferenceNs: res.inferenceNs, cpuNs: res.cpuNs, ranOn: this.pool.serviceClass.id, dispatchedAt: batch.dispatchedAt })
    }, (err: unknown) => {
      const e = workerError(err, 'FW_ERR_RUNTIME_INFERENCE_FAILED')
      for (const job of batch.jobs) job.done(e, null, 0, null)
    }).finally(() => {
      const ms = performance.now() - t0
      if (lent) {
        this.stats.lentBusyMs += ms
        batch.owner.stats.borrowedMs += ms
      } else {
        this.stats.ownBusyMs += ms
      }
      this.running--
      // A pool that ran the batch on this thread (inline) did so inside this
      // turn of the event loop: the next batch waits for the next turn, so
      // sockets are read (and refusals answered) between batches, as they are
      // while a worker computes. Nothing queued: nothing to schedule, so an
      // idle class adds no loop turn per batch.
      if (!this.pool.runsOnCaller) this.pump()
      else if (this.queue.size > 0 || this.borrowersQueued()) this.schedulePump()
    })
  }

  private complete (batch: Batch, output: Float32Array, info: BatchInfo): void {
    const u = batch.unit
    const measured = info.inferenceNs / 1000 / batch.rows
    u.usPerRow += EWMA * (measured - u.usPerRow)
    let r = 0
    for (const job of batch.jobs) {
      // Replace the estimate with the measured cost in the tenant's counter.
      this.queue.charge(job.flow, job.rows * measured - job.cost)
      job.done(null, output, r, info)
      r += job.rows
    }
  }

  /** Stops the class's timer (shutdown). */
  stop (): void {
    this.stopped = true
    this.timer?.close()
    this.timer = null
    this.timerAt = Infinity
  }
}

/**
 * Latest time a queued job may still be waiting for its batch to fill: its
 * batching allowance from arrival, and early enough before its deadline for a
 * full batch of its unit (the largest it may join) to run.
 */
function holdLimit (job: Job, u: UnitState): number {
  return Math.min(job.enqueuedAt + job.route.maxBatchWaitMs, job.deadline - u.maxRows * u.usPerRow / 1000)
}
