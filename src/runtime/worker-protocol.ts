// Messages between the scheduler (main thread) and the inference workers.
// Kept to plain data and transferable Float32Arrays: structured clone of a
// typed array whose buffer is transferred costs no copy.

import type { DeviceConfig } from '../control-plane/config-types.js'

export interface WorkerUnit {
  readonly key: string
  readonly artifact: string
  readonly inputName: string
  readonly outputName: string
  readonly inputDim: number
  readonly outputDim: number
}

export interface WorkerInit {
  readonly classId: string
  readonly cpus: readonly number[]
  readonly device: DeviceConfig
  readonly units: readonly WorkerUnit[]
}

export interface InferTask {
  readonly unit: string
  readonly rows: number
  /** rows × inputDim values, row-major; its buffer is transferred to the worker. */
  readonly input: Float32Array
}

export interface PingTask {
  readonly ping: true
}

export interface InferResult {
  /** rows × outputDim values, row-major. */
  readonly output: Float32Array
  /** Wall time of session.run in the worker, in nanoseconds. */
  readonly inferenceNs: number
  /** CPU time of the worker thread during session.run, ns (wall time when the native addon is missing). */
  readonly cpuNs: number
}

export interface PingResult {
  readonly classId: string
  /** CPUs the worker thread is allowed to run on (null when unpinned). */
  readonly affinity: readonly number[] | null
  readonly threadId: number
}
