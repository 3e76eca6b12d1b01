// One inference worker thread of a service class's Piscina pool.
// Start-up order matters: pin the thread to the class's CPU set FIRST, then
// create onnxruntime sessions, so the intra-op threads onnxruntime spawns
// inherit the mask (threads created after pinning get the same affinity).

import { threadId } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import { workerData } from 'piscina'
import * as ort from 'onnxruntime-node'
import { loadAffinity } from '../src/runtime/affinity.js'
import type { InferResult, InferTask, PingResult, PingTask, WorkerInit } from '../src/runtime/worker-protocol.js'

const init = workerData as WorkerInit

const affinity = loadAffinity()
let pinned: number[] | null = null
if (affinity !== null) {
  affinity.setThreadAffinity(init.cpus)
  pinned = affinity.getThreadAffinity()
}

interface LoadedUnit {
  readonly session: ort.InferenceSession
  readonly inputName: string
  readonly outputName: string
  readonly inputDim: number
  readonly outputDim: number
}

function sessionOptions (): ort.InferenceSession.SessionOptions {
  // One intra-op thread per worker: parallelism comes from the pool's workers,
  // and more threads than pinned CPUs only adds contention.
  const base: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' }
  if (init.device.kind === 'cuda') return { ...base, executionProviders: [{ name: 'cuda', deviceId: init.device.deviceId }] }
  return { ...base, executionProviders: ['cpu'] }
}

const units = new Map<string, LoadedUnit>()
// A class that lends workers to other classes also serves their units; units
// of the same artifact share one session (one copy of the weights).
const sessions = new Map<string, ort.InferenceSession>()
for (const u of init.units) {
  let session = sessions.get(u.artifact)
  if (session === undefined) {
    try {
      session = await ort.InferenceSession.create(u.artifact, sessionOptions())
    } catch (err) {
      const msg = (err as Error).message
      if (init.device.kind === 'cuda') {
        throw new Error(`FW_ERR_RUNTIME_PROVIDER_UNAVAILABLE: class ${init.classId} asks for CUDA device ${init.device.deviceId}, but onnxruntime's CUDA execution provider is not available here (${msg}); install onnxruntime-node with CUDA binaries or set "device": "cpu"`)
      }
      throw new Error(`FW_ERR_RUNTIME_MODEL_LOAD: class ${init.classId} cannot load ${u.key} from ${u.artifact}: ${msg}`)
    }
    // Warm up: the first run allocates arenas and picks kernels.
    const warm = new ort.Tensor('float32', new Float32Array(u.inputDim), [1, u.inputDim])
    await session.run({ [u.inputName]: warm })
    sessions.set(u.artifact, session)
  }
  units.set(u.key, { session, inputName: u.inputName, outputName: u.outputName, inputDim: u.inputDim, outputDim: u.outputDim })
}

export default async function run (task: InferTask | PingTask): Promise<InferResult | PingResult> {
  if ('ping' in task) return { classId: init.classId, affinity: pinned, threadId }
  const unit = units.get(task.unit)
  if (unit === undefined) throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: unit ${task.unit} is not loaded in class ${init.classId}`)
  const t0 = performance.now()
  const c0 = affinity?.threadCpuTimeNs() ?? 0
  const out = await unit.session.run({ [unit.inputName]: new ort.Tensor('float32', task.input, [task.rows, unit.inputDim]) })
  // One intra-op thread: session.run computes on this thread, so this
  // thread's CPU time is the batch's compute. Without the addon, wall time.
  const inferenceNs = Math.round((performance.now() - t0) * 1e6)
  const cpuNs = affinity === null ? inferenceNs : Math.round(affinity.threadCpuTimeNs() - c0)
  const tensor = out[unit.outputName]
  if (tensor === undefined) throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: output ${unit.outputName} missing`)
  const output = tensor.data as Float32Array
  // Outputs are small (rows × outputDim); a structured-clone copy is cheaper
  // than wrapping them for transfer.
  return { output, inferenceNs, cpuNs }
}
