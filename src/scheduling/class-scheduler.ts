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
// cost on the gateway thread small. No timer holds a request back when a
// worker is idle; while all are busy, arrivals accumulate into the next batch.
// Deadlines: a 1 ms sweep (running only while something is queued) answers
// expired requests with 504 before they run; dispatch re-checks.
// Lending: a class whose queue is empty lends its free workers to the classes
// in its `lendTo` list (the one that has received the least lent time per unit
// of class weight first): it forms a batch from the borrower's fair queue and
// runs it on its own pool (its workers load the borrower's models too). Its
// own work takes the worker back at the next batch boundary, because a free
// worker always serves its own queue first.

import { performance } from 'node:perf_hooks'
import { Reject, type AdmissionTable } from '../admission/admission-table.js'
import type { ExecutableUnit, Route } from '../control-plane/registry.js'
import { FairwayError, fwError } from '../errors.js'
import { workerError, type ClassPool } from '../runtime/class-pool.js'
import { FairQueue } from './fair-queue.js'

export interface BatchInfo {
  /** Rows in the whole batch this job ran in. */
  readonly batchRows: number
  /** Worker-measured inference time of the whole batch, ns. */
  readonly inferenceNs: number
  /** Worker thread CPU time of the whole batch, ns. */
  readonly cpuNs: number
  /** Service class whose worker ran the batch (differs from the job's when lent). */
  readonly ranOn: string
  /** performance.now() when the batch left the queue. */
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
  readonly input: Float32Array
}

interface UnitState {
  readonly unit: ExecutableUnit
  readonly inputDim: number
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
  readonly pool: ClassPool
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
  private sweeper: NodeJS.Timeout | null = null

  /** False sends every request as its own worker task (the batching benchmark's baseline). */
  private readonly batching: boolean

  constructor (pool: ClassPool, units: readonly ExecutableUnit[], admission: AdmissionTable, classSlot: number, weightOf: (flow: number) => number, batching = true) {
    this.pool = pool
    this.batching = batching
    this.admission = admission
    this.classSlot = classSlot
    this.queue = new FairQueue<Job>(weightOf)
    for (const unit of units) this.units.set(unit.key, { unit, inputDim: unit.model.input.shape[1] ?? 0, usPerRow: INITIAL_US_PER_ROW })
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

  /** The job was admitted (AdmissionTable counted it queued); it leaves through dequeue exactly once. */
  enqueue (job: Job): void {
    const u = this.units.get(job.route.unitKey)
    if (u === undefined) {
      this.admission.dequeued(job.flow, this.classSlot)
      job.done(fwError('FW_ERR_INTERNAL'), null, 0, null)
      return
    }
    job.cost = job.rows * u.usPerRow
    this.queuedCost += job.cost
    this.queue.push(job)
    if (this.running < this.pool.capacity) this.schedulePump()
    else for (const l of this.lenders) if (l.running < l.pool.capacity) l.schedulePump()
    if (this.sweeper === null) this.sweeper = setInterval(this.sweep, 1)
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

  private readonly sweep = (): void => {
    const now = performance.now()
    this.queue.removeWhere((j) => j.deadline <= now, this.expire)
    if (this.queue.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper)
      this.sweeper = null
    }
  }

  private readonly expire = (job: Job): void => {
    this.leave(job)
    this.stats.expired++
    this.admission.countReject(job.flow, Reject.DeadlineExceeded)
    const err = fwError('FW_ERR_DEADLINE_EXCEEDED', Math.round(job.deadline - job.enqueuedAt))
    err.reason = 'deadline_exceeded'
    job.done(err, null, 0, null)
  }

  /** pop() charged the flow for a job that will not run: refund, then expire. */
  private expireAfterPop (job: Job): void {
    this.queue.charge(job.flow, -job.cost)
    this.expire(job)
  }

  private leave (job: Job): void {
    this.queuedCost -= job.cost
    this.admission.dequeued(job.flow, this.classSlot)
  }

  private pump (): void {
    while (this.running < this.pool.capacity) {
      // Own work first: that is what takes a lent worker back.
      const batch = this.formBatch() ?? this.borrowerByShare()?.formBatch() ?? null
      if (batch === null) return
      this.run(batch)
    }
    // All own workers busy and work still waiting: ask idle lenders to help.
    if (this.queue.size > 0) for (const l of this.lenders) if (l.running < l.pool.capacity) l.schedulePump()
  }

  /**
   * Among borrowers with queued work, the one that has received the least lent
   * time per unit of class weight: lent capacity is shared by class weights.
   */
  private borrowerByShare (): ClassScheduler | null {
    let best: ClassScheduler | null = null
    let bestKey = Infinity
    for (const b of this.borrowers) {
      if (b.queue.size === 0) continue
      const key = b.stats.borrowedMs / b.pool.serviceClass.weight
      if (key < bestKey) { best = b; bestKey = key }
    }
    return best
  }

  /** Takes the next batch from this class's fair queue (null when empty). */
  private formBatch (): Batch | null {
    const now = performance.now()
    let first: Job | null = null
    while (first === null) {
      const j = this.queue.pop()
      if (j === null) return null
      if (j.deadline <= now) this.expireAfterPop(j)
      else first = j
    }
    const unit = this.units.get(first.route.unitKey) as UnitState
    const maxRows = this.batching ? unit.unit.model.maxBatchSize : first.rows
    this.leave(first)
    const jobs: Job[] = [first]
    let rows = first.rows
    for (let next = this.queue.peek(); next !== null && next.route.unitKey === first.route.unitKey && rows + next.rows <= maxRows; next = this.queue.peek()) {
      this.queue.pop()
      if (next.deadline <= now) { this.expireAfterPop(next); continue }
      this.leave(next)
      jobs.push(next)
      rows += next.rows
    }
    const input = new Float32Array(rows * unit.inputDim)
    let off = 0
    for (const job of jobs) { input.set(job.input, off); off += job.input.length }
    this.stats.batches++
    this.stats.rows += rows
    return { owner: this, dispatchedAt: now, unit, jobs, rows, input }
  }

  /** Runs a batch (own or borrowed) on this class's pool. */
  private run (batch: Batch): void {
    this.running++
    const lent = batch.owner !== this
    if (lent) batch.owner.stats.borrowedBatches++
    const t0 = performance.now()
    this.pool.run({ unit: batch.unit.unit.key, rows: batch.rows, input: batch.input }).then((res) => {
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
      this.pump()
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

  /** Stops the deadline sweep (shutdown). */
  stop (): void {
    if (this.sweeper !== null) clearInterval(this.sweeper)
    this.sweeper = null
  }
}
