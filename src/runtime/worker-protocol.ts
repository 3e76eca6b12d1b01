// What the scheduler (main thread) and the inference workers exchange. Only
// start-up (WorkerInit, PingTask) and the one long-lived ServeTask per worker
// cross as Piscina tasks; batches go through the worker's Mailbox
// (mailbox.ts).

import type { DeviceConfig } from '../control-plane/config-types.js'
import type { ExecutableUnit } from '../control-plane/registry.js'
import type { MailboxSize } from './mailbox.js'

export interface WorkerUnit {
  readonly key: string
  readonly artifact: string
  readonly inputName: string
  readonly outputName: string
  readonly inputDim: number
  readonly outputDim: number
  /** Most rows in one batch of this unit (its model's maxBatchSize). */
  readonly maxRows: number
}

/** What a thread needs to load and run each of these units. */
export function workerUnits (units: readonly ExecutableUnit[]): WorkerUnit[] {
  return units.map((u) => ({
    key: u.key,
    artifact: u.version.artifact,
    inputName: u.model.input.name,
    outputName: u.model.output.name,
    inputDim: u.model.input.shape[1] ?? 0,
    outputDim: u.model.output.shape[1] ?? 0,
    maxRows: u.model.maxBatchSize,
  }))
}

export interface WorkerInit {
  readonly classId: string
  readonly cpus: readonly number[]
  /** Nice value for the worker thread (the class's `nice`). */
  readonly nice: number
  readonly device: DeviceConfig
  readonly units: readonly WorkerUnit[]
}

export interface InferTask {
  readonly unit: string
  readonly rows: number
  /**
   * The batch's rows × inputDim values, row-major, as consecutive parts (the
   * requests' own inputs), copied once into the worker's mailbox.
   */
  readonly parts: ReadonlyArray<{ readonly input: Float32Array }>
}

export interface PingTask {
  readonly ping: true
}

/** Runs until the mailbox says Stop: the worker serves every batch posted to it. */
export interface ServeTask {
  readonly serve: SharedArrayBuffer
  readonly size: MailboxSize
  /** Unit keys in the order the mailbox's UNIT slot indexes them. */
  readonly units: readonly string[]
}

export interface InferResult {
  /** rows × outputDim values, row-major. */
  readonly output: Float32Array
  /** Wall time of the onnxruntime run (on the worker, or the gateway for an inline class), in nanoseconds. */
  readonly inferenceNs: number
  /** CPU time of the thread that ran it during the run, ns (wall time when the native addon is missing). */
  readonly cpuNs: number
}

export interface PingResult {
  readonly classId: string
  /** CPUs the worker thread is allowed to run on (null when unpinned). */
  readonly affinity: readonly number[] | null
  /** The worker thread's nice value (null when the addon is missing). */
  readonly nice: number | null
  readonly threadId: number
}
