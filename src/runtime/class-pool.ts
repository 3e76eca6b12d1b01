// One Piscina pool per service class. Threads are created up front (min =
// max = workers) so the class's CPU set and warm sessions are in place before
// the server reports ready. Piscina owns the threads; batches do not go
// through Piscina tasks but through one Mailbox per worker (see mailbox.ts
// for why and for the handshake). The scheduler never runs more batches than
// there are workers, so a free mailbox exists when run() is called unless a
// worker was lost for good (then run() refuses the batch with a stable code).

import { join } from 'node:path'
import { Piscina } from 'piscina'
import type { ExecutableUnit } from '../control-plane/registry.js'
import type { ServiceClassConfig } from '../control-plane/config-types.js'
import { FairwayError, type ErrorCode, ERRORS } from '../errors.js'
import { packageRoot } from './affinity.js'
import type { BatchPool } from './batch-pool.js'
import { ERROR_LEN, Mailbox, ROWS, SERVING, STATE, State, UNIT, type MailboxSize } from './mailbox.js'
import { workerUnits, type InferResult, type InferTask, type PingResult, type ServeTask, type WorkerInit } from './worker-protocol.js'

export const WORKER_FILE = join(packageRoot(), 'dist', 'workers', 'inference-worker.js')

interface UnitSlot {
  /** Index of the unit in the mailbox's UNIT slot. */
  readonly index: number
  readonly outputDim: number
}

/** One worker's mailbox and the batch it is running. */
class WorkerSlot {
  readonly box: Mailbox
  /** Settles the batch in flight; null while the mailbox is free. */
  pending: { resolve: (r: InferResult) => void, reject: (e: FairwayError) => void, outputValues: number } | null = null
  /** Bumped per batch, so a wake-up left over from a crashed worker's batch is ignored. */
  generation = 0
  /** In the pool's free list (a slot must never be there twice: two batches would share a mailbox). */
  inFree = false
  /** Resolves when the worker's serve task ends (Stop, or the thread died). */
  served: Promise<void> = Promise.resolve()

  constructor (size: MailboxSize) {
    this.box = Mailbox.create(size)
  }
}

/**
 * How long a crashed worker's replacement may take to start serving its
 * mailbox. Piscina stops replacing threads once one fails while starting
 * (e.g. its model file is gone); the mailbox is then retired so batches fail
 * at once instead of waiting for a thread that never comes.
 */
const RESTART_GRACE_MS = 30_000

const decoder = new TextDecoder()

export class ClassPool implements BatchPool {
  readonly runsOnCaller = false
  readonly serviceClass: ServiceClassConfig
  private readonly piscina: Piscina
  private readonly unitSlots = new Map<string, UnitSlot>()
  private readonly serveTask: Omit<ServeTask, 'serve'>
  private readonly slots: WorkerSlot[] = []
  private readonly free: WorkerSlot[] = []
  private started = false
  private closing = false

  constructor (serviceClass: ServiceClassConfig, units: readonly ExecutableUnit[]) {
    this.serviceClass = serviceClass
    const init: WorkerInit = {
      classId: serviceClass.id,
      cpus: serviceClass.cpus,
      nice: serviceClass.nice,
      device: serviceClass.device,
      units: workerUnits(units),
    }
    let inputValues = 0
    let outputValues = 0
    init.units.forEach((u, index) => {
      this.unitSlots.set(u.key, { index, outputDim: u.outputDim })
      inputValues = Math.max(inputValues, u.maxRows * u.inputDim)
      outputValues = Math.max(outputValues, u.maxRows * u.outputDim)
    })
    const size: MailboxSize = { inputValues, outputValues }
    this.serveTask = { size, units: init.units.map((u) => u.key) }
    for (let i = 0; i < serviceClass.workers; i++) this.slots.push(new WorkerSlot(size))
    this.piscina = new Piscina({
      filename: WORKER_FILE,
      minThreads: serviceClass.workers,
      maxThreads: serviceClass.workers,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      workerData: init,
    })
    // Piscina also emits a worker's start-up or crash error on the pool; with
    // no listener that would be an uncaught exception. Start-up failures reach
    // start() through the ping tasks; a later crash fails its serve task
    // (handled in serve()) and Piscina replaces the thread.
    this.piscina.on('error', (err: unknown) => {
      if (this.started) console.error(`fairway: worker of class ${serviceClass.id} failed: ${err instanceof Error ? err.message : String(err)}`)
    })
  }

  get capacity (): number {
    return this.serviceClass.workers
  }

  /** Resolves once every worker has pinned itself and warmed its sessions. */
  async start (): Promise<PingResult[]> {
    const pings: Array<Promise<PingResult>> = []
    for (let i = 0; i < this.serviceClass.workers; i++) pings.push(this.piscina.run({ ping: true }) as Promise<PingResult>)
    let res: PingResult[]
    try {
      res = await Promise.all(pings)
    } catch (err) {
      throw workerError(err, 'FW_ERR_RUNTIME_MODEL_LOAD')
    }
    this.started = true
    // Each serve task occupies one worker for good (one task per worker), so
    // Piscina places them one per thread.
    for (const slot of this.slots) {
      this.serve(slot)
      this.release(slot)
    }
    return res
  }

  private release (slot: WorkerSlot): void {
    if (slot.inFree) return
    slot.inFree = true
    this.free.push(slot)
  }

  /** Posts a mailbox's serve task; after a crash, again on Piscina's replacement thread. */
  private serve (slot: WorkerSlot): void {
    const task: ServeTask = { ...this.serveTask, serve: slot.box.sab }
    slot.served = (this.piscina.run(task) as Promise<null>).then(() => {}, (err: unknown) => {
      if (this.closing) return
      // The thread died. Its batch fails (the scheduler answers its jobs);
      // the mailbox is reset and served again by the replacement thread. A
      // batch posted meanwhile waits in the mailbox for that thread.
      slot.generation++
      const p = slot.pending
      slot.pending = null
      Atomics.store(slot.box.header, SERVING, 0)
      Atomics.store(slot.box.header, STATE, State.Empty)
      this.serve(slot)
      this.release(slot)
      setTimeout(() => { this.retireIfNotServed(slot) }, RESTART_GRACE_MS).unref()
      if (p !== null) p.reject(workerError(err, 'FW_ERR_RUNTIME_INFERENCE_FAILED'))
    })
  }

  private retireIfNotServed (slot: WorkerSlot): void {
    if (this.closing || Atomics.load(slot.box.header, SERVING) === 1) return
    console.error(`fairway: class ${this.serviceClass.id} lost a worker: its replacement did not start within ${RESTART_GRACE_MS / 1000} s; its batches now fail`)
    const i = this.free.indexOf(slot)
    if (i >= 0) this.free.splice(i, 1)
    slot.inFree = false
    slot.generation++
    const p = slot.pending
    slot.pending = null
    p?.reject(new FairwayError('FW_ERR_RUNTIME_INFERENCE_FAILED', [`class ${this.serviceClass.id} lost a worker thread`]))
  }

  run (task: InferTask): Promise<InferResult> {
    const unit = this.unitSlots.get(task.unit)
    const slot = this.free.pop()
    if (slot !== undefined) slot.inFree = false
    let values = 0
    for (const p of task.parts) values += p.input.length
    if (unit === undefined || slot === undefined || this.closing || values > slot.box.input.length) {
      if (slot !== undefined) this.release(slot)
      return Promise.reject(new FairwayError('FW_ERR_RUNTIME_INFERENCE_FAILED', [`class ${this.serviceClass.id} cannot take a batch of ${task.rows} row(s) of ${task.unit} now`]))
    }
    const box = slot.box
    const h = box.header
    let off = 0
    for (const p of task.parts) { box.input.set(p.input, off); off += p.input.length }
    h[UNIT] = unit.index
    h[ROWS] = task.rows
    // Input, UNIT and ROWS are written; this store hands the mailbox over.
    Atomics.store(h, STATE, State.Task)
    Atomics.notify(h, STATE)
    const generation = ++slot.generation
    return new Promise<InferResult>((resolve, reject) => {
      slot.pending = { resolve, reject, outputValues: task.rows * unit.outputDim }
      this.awaitDone(slot, generation)
    })
  }

  /** Resumes when the worker moves the mailbox out of Task (Done), on the event loop. */
  private awaitDone (slot: WorkerSlot, generation: number): void {
    const w = Atomics.waitAsync(slot.box.header, STATE, State.Task)
    if (w.async) void w.value.then(() => { this.finish(slot, generation) })
    else this.finish(slot, generation)
  }

  private finish (slot: WorkerSlot, generation: number): void {
    const p = slot.pending
    if (slot.generation !== generation || p === null) return
    const box = slot.box
    const h = box.header
    const state = Atomics.load(h, STATE)
    if (state === State.Task) { this.awaitDone(slot, generation); return }
    if (state !== State.Done) return // Stop: close() settles it
    slot.pending = null
    const errorLen = h[ERROR_LEN] ?? 0
    // Copy out before the mailbox is handed back: it is reused by the next batch.
    // (TextDecoder refuses views of a SharedArrayBuffer, hence slice.)
    const message = errorLen > 0 ? decoder.decode(box.errorBytes.slice(0, errorLen)) : ''
    const output = errorLen > 0 ? null : box.output.slice(0, p.outputValues)
    const inferenceNs = box.inferenceNs
    const cpuNs = box.cpuNs
    Atomics.store(h, STATE, State.Empty)
    this.release(slot)
    if (output === null) p.reject(workerError(new Error(message), 'FW_ERR_RUNTIME_INFERENCE_FAILED'))
    else p.resolve({ output, inferenceNs, cpuNs })
  }

  async close (): Promise<void> {
    this.closing = true
    for (const slot of this.slots) {
      // A worker mid-batch sees Stop when it tries to post Done and returns.
      Atomics.store(slot.box.header, STATE, State.Stop)
      Atomics.notify(slot.box.header, STATE)
      const p = slot.pending
      slot.pending = null
      if (p !== null) p.reject(new FairwayError('FW_ERR_RUNTIME_INFERENCE_FAILED', [`class ${this.serviceClass.id} is shutting down`]))
    }
    // Wait for the serve tasks that run (a worker mid-batch finishes it, sees
    // Stop and returns: terminating it inside onnxruntime would abort the
    // process); a serve task still queued for a thread is dropped by close.
    await Promise.all(this.slots.filter((s) => Atomics.load(s.box.header, SERVING) === 1).map(async (s) => await s.served))
    await this.piscina.close({ force: true })
  }
}

/**
 * Restores the FW_ERR code a worker put in front of its message: errors
 * cross the thread boundary as plain Errors (structured clone keeps only the
 * message), so workers throw `FW_ERR_...: text`.
 */
export function workerError (err: unknown, fallback: ErrorCode): FairwayError {
  if (err instanceof FairwayError) return err
  const msg = err instanceof Error ? err.message : String(err)
  const m = /^(FW_ERR_[A-Z_]+): ([\s\S]*)$/.exec(msg)
  if (m !== null && m[1] !== undefined && m[1] in ERRORS) {
    const code = m[1] as ErrorCode
    return new FairwayError(code, [m[2] ?? ''])
  }
  return new FairwayError(fallback, [msg])
}
