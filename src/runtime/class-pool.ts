// One Piscina pool per service class. Threads are created up front (min =
// max = workers) so the class's CPU set and warm sessions are in place before
// the server reports ready; the scheduler never gives Piscina more tasks than
// there are workers, so Piscina's own queue stays empty and ordering is ours.

import { join } from 'node:path'
import { Piscina } from 'piscina'
import type { ExecutableUnit } from '../control-plane/registry.js'
import type { ServiceClassConfig } from '../control-plane/config-types.js'
import { FairwayError, type ErrorCode, ERRORS } from '../errors.js'
import { packageRoot } from './affinity.js'
import type { InferResult, InferTask, PingResult, WorkerInit } from './worker-protocol.js'

export const WORKER_FILE = join(packageRoot(), 'dist', 'workers', 'inference-worker.js')

export class ClassPool {
  readonly serviceClass: ServiceClassConfig
  private readonly piscina: Piscina

  constructor (serviceClass: ServiceClassConfig, units: readonly ExecutableUnit[]) {
    this.serviceClass = serviceClass
    const init: WorkerInit = {
      classId: serviceClass.id,
      cpus: serviceClass.cpus,
      device: serviceClass.device,
      units: units.map((u) => ({
        key: u.key,
        artifact: u.version.artifact,
        inputName: u.model.input.name,
        outputName: u.model.output.name,
        inputDim: u.model.input.shape[1] ?? 0,
        outputDim: u.model.output.shape[1] ?? 0,
      })),
    }
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
    // start() through the ping tasks; later crashes fail their batch (the
    // scheduler answers those requests) and Piscina replaces the thread.
    this.piscina.on('error', (err: unknown) => {
      if (this.started) console.error(`fairway: worker of class ${serviceClass.id} failed: ${err instanceof Error ? err.message : String(err)}`)
    })
  }

  private started = false

  get capacity (): number {
    return this.serviceClass.workers
  }

  /** Resolves once every worker has pinned itself and warmed its sessions. */
  async start (): Promise<PingResult[]> {
    const pings: Array<Promise<PingResult>> = []
    for (let i = 0; i < this.serviceClass.workers; i++) pings.push(this.piscina.run({ ping: true }) as Promise<PingResult>)
    try {
      const res = await Promise.all(pings)
      this.started = true
      return res
    } catch (err) {
      throw workerError(err, 'FW_ERR_RUNTIME_MODEL_LOAD')
    }
  }

  run (task: InferTask): Promise<InferResult> {
    // Transfer the batch buffer: the worker owns it from here, no copy.
    return this.piscina.run(task, { transferList: [task.input.buffer as ArrayBuffer] }) as Promise<InferResult>
  }

  async close (): Promise<void> {
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
