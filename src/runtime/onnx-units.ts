// The onnxruntime half of running a class: load a class's units (one session
// per artifact, warmed) and run one batch of a unit. Shared by the inference
// workers (workers/inference-worker.ts) and the inline pool (inline-pool.ts),
// which runs the same code on the gateway thread.
//
// Sessions are onnxruntime-node's native InferenceSession, used directly.
// The public `session.run` wraps the same native call in a Promise and a
// setImmediate: about 7 µs per call here (16.3 against 8.9 µs for a batch of
// one row of the demo tiny-classifier), which is most of a small model's
// inference; and on the gateway thread the setImmediate would let other
// callbacks run inside a batch's measured (billed) time. onnxruntime-node is
// pinned to an exact version in package.json because this reaches past its
// public API (dist/binding.js); test/onnx-units.test.ts checks the outputs.

import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import * as ort from 'onnxruntime-node'
import type { DeviceConfig } from '../control-plane/config-types.js'
import type { WorkerUnit } from './worker-protocol.js'

/** The part of onnxruntime-node's native session (dist/binding.js) fairway uses. */
interface NativeSession {
  loadModel (path: string, options: ort.InferenceSession.SessionOptions): void
  readonly inputMetadata: ReadonlyArray<{ readonly name: string }>
  readonly outputMetadata: ReadonlyArray<{ readonly name: string }>
  run (feeds: Record<string, ort.Tensor>, fetches: Record<string, null>, options: Record<string, never>): Record<string, ort.Tensor | undefined>
}

interface NativeBinding {
  readonly binding: { readonly InferenceSession: new () => NativeSession }
  /** Initialises onnxruntime once per thread (log level, Tensor class); the public API calls it on first use. */
  readonly initOrt: () => void
}

const native = createRequire(import.meta.url)('onnxruntime-node/dist/binding.js') as NativeBinding

export interface LoadedUnit {
  readonly session: NativeSession
  readonly inputDim: number
  /**
   * Input copy for onnxruntime (maxRows × inputDim values), reused by every
   * batch: onnxruntime rejects tensors over a SharedArrayBuffer, and a batch's
   * rows arrive as several parts anyway. The caller fills it before runUnit.
   */
  readonly input: Float32Array
  /** `{ [inputName]: <tensor> }`, the tensor replaced per batch. */
  readonly feeds: Record<string, ort.Tensor>
  readonly inputName: string
  /** `{ [outputName]: null }`: which output to compute. */
  readonly fetches: Record<string, null>
  readonly outputName: string
}

export interface UnitRun {
  /** rows × outputDim values, row-major (onnxruntime's own output buffer, fresh per run). */
  readonly output: Float32Array
  readonly inferenceNs: number
  readonly cpuNs: number
}

const NO_RUN_OPTIONS: Record<string, never> = {}

function sessionOptions (device: DeviceConfig): ort.InferenceSession.SessionOptions {
  // One intra-op thread: parallelism comes from the pool's workers, and more
  // threads than pinned CPUs only adds contention. It also means run computes
  // on the calling thread, so that thread's CPU time is the batch's compute.
  const base: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' }
  if (device.kind === 'cuda') return { ...base, executionProviders: [{ name: 'cuda', deviceId: device.deviceId }] }
  return { ...base, executionProviders: ['cpu'] }
}

function loadSession (classId: string, device: DeviceConfig, u: WorkerUnit): NativeSession {
  const session = new native.binding.InferenceSession()
  try {
    session.loadModel(u.artifact, sessionOptions(device))
  } catch (err) {
    const msg = (err as Error).message
    if (device.kind === 'cuda') {
      throw new Error(`FW_ERR_RUNTIME_PROVIDER_UNAVAILABLE: class ${classId} asks for CUDA device ${device.deviceId}, but onnxruntime's CUDA execution provider is not available here (${msg}); install onnxruntime-node with CUDA binaries or set "device": "cpu"`)
    }
    throw new Error(`FW_ERR_RUNTIME_MODEL_LOAD: class ${classId} cannot load ${u.key} from ${u.artifact}: ${msg}`)
  }
  return session
}

function has (list: ReadonlyArray<{ readonly name: string }>, name: string): boolean {
  return list.some((m) => m.name === name)
}

/**
 * Loads and warms every unit. Units of the same artifact share one session
 * (one copy of the weights). Errors carry the FW_ERR code in front of the
 * message, because worker errors cross the thread boundary as plain Errors.
 */
export function loadUnits (classId: string, device: DeviceConfig, units: readonly WorkerUnit[]): Map<string, LoadedUnit> {
  native.initOrt()
  const loaded = new Map<string, LoadedUnit>()
  const sessions = new Map<string, NativeSession>()
  for (const u of units) {
    let session = sessions.get(u.artifact)
    if (session === undefined) {
      session = loadSession(classId, device, u)
      sessions.set(u.artifact, session)
    }
    // The native run does not check names as the public API does: check here, once.
    if (!has(session.inputMetadata, u.inputName) || !has(session.outputMetadata, u.outputName)) {
      throw new Error(`FW_ERR_RUNTIME_MODEL_LOAD: class ${classId} cannot serve ${u.key}: ${u.artifact} has inputs [${session.inputMetadata.map((m) => m.name).join(', ')}] and outputs [${session.outputMetadata.map((m) => m.name).join(', ')}], the catalog names input ${u.inputName} and output ${u.outputName}`)
    }
    const unit: LoadedUnit = {
      session,
      inputDim: u.inputDim,
      input: new Float32Array(u.maxRows * u.inputDim),
      feeds: {},
      inputName: u.inputName,
      fetches: { [u.outputName]: null },
      outputName: u.outputName,
    }
    // Warm up: the first run allocates arenas and picks kernels.
    runUnit(unit, 1, null)
    loaded.set(u.key, unit)
  }
  return loaded
}

/**
 * Runs the first `rows` rows of `unit.input`, synchronously, on the calling
 * thread. `threadCpuNs` reads that thread's CPU clock (the affinity addon);
 * without it a batch's CPU time is its wall time. Throws on failure (message
 * prefixed with its FW_ERR code).
 */
export function runUnit (unit: LoadedUnit, rows: number, threadCpuNs: (() => number) | null): UnitRun {
  const n = rows * unit.inputDim
  // Per batch only the Tensor (and, for a part-filled batch, a view) is allocated.
  unit.feeds[unit.inputName] = new ort.Tensor('float32', n === unit.input.length ? unit.input : unit.input.subarray(0, n), [rows, unit.inputDim])
  const t0 = performance.now()
  const c0 = threadCpuNs?.() ?? 0
  let out: Record<string, ort.Tensor | undefined>
  try {
    out = unit.session.run(unit.feeds, unit.fetches, NO_RUN_OPTIONS)
  } catch (err) {
    throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: ${(err as Error).message}`)
  }
  const inferenceNs = Math.round((performance.now() - t0) * 1e6)
  const cpuNs = threadCpuNs === null ? inferenceNs : Math.round(threadCpuNs() - c0)
  const tensor = out[unit.outputName]
  if (tensor === undefined) throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: output ${unit.outputName} missing`)
  return { output: tensor.data as Float32Array, inferenceNs, cpuNs }
}
