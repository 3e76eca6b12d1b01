// Per-service-class scheduler with dynamic batching. Requests for the same
// executable unit (model version in this class) queue together; whenever a
// worker of the class is free, the next unit in round-robin order gives up to
// maxBatchSize rows as ONE worker task. Dispatch to a worker costs more than a
// small model's inference (~60 µs vs ~12 µs here), so batching is what keeps
// per-request work on the gateway thread small.
//
// Same-tick arrivals are collected with setImmediate before dispatch; while
// every worker is busy, arrivals accumulate and leave in the next batch. No
// timer holds a request back when a worker is idle.

import { performance } from 'node:perf_hooks'
import type { ExecutableUnit, Route } from '../control-plane/registry.js'
import { FairwayError, fwError } from '../errors.js'
import { workerError, type ClassPool } from '../runtime/class-pool.js'

export interface BatchInfo {
  /** Rows in the whole batch this job ran in. */
  readonly batchRows: number
  /** Worker-measured inference time of the whole batch, ns. */
  readonly inferenceNs: number
}

export interface Job {
  readonly route: Route
  readonly rows: number
  readonly input: Float32Array
  /** performance.now() at enqueue. */
  readonly enqueuedAt: number
  /** performance.now() after which the job must not run. */
  readonly deadline: number
  /**
   * Called exactly once. On success `output` is the whole batch output and the
   * job's rows start at `offsetRows`; the callee copies what it needs.
   */
  done (err: FairwayError | null, output: Float32Array | null, offsetRows: number, batch: BatchInfo | null): void
}

interface UnitQueue {
  readonly unit: ExecutableUnit
  readonly inputDim: number
  readonly outputDim: number
  jobs: Job[]
  head: number
}

export class ClassScheduler {
  readonly pool: ClassPool
  private readonly queues = new Map<string, UnitQueue>()
  private readonly order: UnitQueue[] = []
  private cursor = 0
  private running = 0
  private queuedJobs = 0
  private pumpScheduled = false

  constructor (pool: ClassPool, units: readonly ExecutableUnit[]) {
    this.pool = pool
    for (const unit of units) {
      const q: UnitQueue = { unit, inputDim: unit.model.input.shape[1] ?? 0, outputDim: unit.model.output.shape[1] ?? 0, jobs: [], head: 0 }
      this.queues.set(unit.key, q)
      this.order.push(q)
    }
  }

  get queued (): number {
    return this.queuedJobs
  }

  get busyWorkers (): number {
    return this.running
  }

  enqueue (job: Job): void {
    const q = this.queues.get(job.route.unitKey)
    if (q === undefined) {
      job.done(fwError('FW_ERR_INTERNAL'), null, 0, null)
      return
    }
    q.jobs.push(job)
    this.queuedJobs++
    if (!this.pumpScheduled && this.running < this.pool.capacity) {
      this.pumpScheduled = true
      setImmediate(this.pumpNow)
    }
  }

  private readonly pumpNow = (): void => {
    this.pumpScheduled = false
    this.pump()
  }

  private pump (): void {
    while (this.running < this.pool.capacity && this.queuedJobs > 0) {
      const q = this.nextQueue()
      if (q === null) return
      this.dispatch(q)
    }
  }

  private nextQueue (): UnitQueue | null {
    for (let i = 0; i < this.order.length; i++) {
      const q = this.order[(this.cursor + i) % this.order.length]
      if (q !== undefined && q.head < q.jobs.length) {
        this.cursor = (this.cursor + i + 1) % this.order.length
        return q
      }
    }
    return null
  }

  private dispatch (q: UnitQueue): void {
    const now = performance.now()
    const maxRows = q.unit.model.maxBatchSize
    const batch: Job[] = []
    let rows = 0
    while (q.head < q.jobs.length) {
      const job = q.jobs[q.head] as Job
      if (job.deadline <= now) {
        // Never run late: a request whose budget is gone is answered now.
        q.head++
        this.queuedJobs--
        job.done(fwError('FW_ERR_DEADLINE_EXCEEDED', Math.round(job.deadline - job.enqueuedAt)), null, 0, null)
        continue
      }
      if (rows + job.rows > maxRows && batch.length > 0) break
      q.head++
      this.queuedJobs--
      batch.push(job)
      rows += job.rows
    }
    if (q.head === q.jobs.length) { q.jobs = []; q.head = 0 }
    if (batch.length === 0) return
    const input = new Float32Array(rows * q.inputDim)
    let off = 0
    for (const job of batch) { input.set(job.input, off); off += job.input.length }
    this.running++
    this.pool.run({ unit: q.unit.key, rows, input }).then((res) => {
      const info: BatchInfo = { batchRows: rows, inferenceNs: res.inferenceNs }
      let r = 0
      for (const job of batch) { job.done(null, res.output, r, info); r += job.rows }
    }, (err: unknown) => {
      const e = workerError(err, 'FW_ERR_RUNTIME_INFERENCE_FAILED')
      for (const job of batch) job.done(e, null, 0, null)
    }).finally(() => {
      this.running--
      this.pump()
    })
  }
}
