// One inference worker thread of a service class's Piscina pool.
// Start-up order matters: pin the thread to the class's CPU set FIRST, then
// create onnxruntime sessions, so the intra-op threads onnxruntime spawns
// inherit the mask (threads created after pinning get the same affinity).

import { threadId } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import { workerData } from 'piscina'
import * as ort from 'onnxruntime-node'
import { loadAffinity } from '../src/runtime/affinity.js'
import { WORKER_THREAD_PREFIX } from '../src/runtime/background-nice.js'
import { ERROR_LEN, Mailbox, ROWS, SERVING, STATE, State, UNIT } from '../src/runtime/mailbox.js'
import type { PingResult, PingTask, ServeTask, WorkerInit } from '../src/runtime/worker-protocol.js'

const init = workerData as WorkerInit

const affinity = loadAffinity()
let pinned: number[] | null = null
let nice: number | null = null
if (affinity !== null) {
  // First: the gateway's background-nice sweep leaves threads so named alone.
  affinity.setThreadName(`${WORKER_THREAD_PREFIX}${init.classId}`)
  affinity.setThreadAffinity(init.cpus)
  pinned = affinity.getThreadAffinity()
  // Also before the sessions: threads onnxruntime starts inherit it.
  // Only ever raised: a class's nice is a floor above what the process has.
  if (init.nice > affinity.getThreadNice()) affinity.setThreadNice(init.nice)
  nice = affinity.getThreadNice()
}

interface LoadedUnit {
  readonly session: ort.InferenceSession
  readonly inputName: string
  readonly outputName: string
  readonly inputDim: number
  /** Input copy for onnxruntime (maxRows × inputDim values), reused by every batch. */
  readonly inputBuffer: ArrayBuffer
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
  units.set(u.key, { session, inputName: u.inputName, outputName: u.outputName, inputDim: u.inputDim, inputBuffer: new ArrayBuffer(u.maxRows * u.inputDim * 4) })
}

export default async function run (task: PingTask | ServeTask): Promise<PingResult | null> {
  if ('ping' in task) return { classId: init.classId, affinity: pinned, nice, threadId }
  await serve(new Mailbox(task.serve, task.size), task.units.map((key) => units.get(key)))
  return null
}

const encoder = new TextEncoder()

/**
 * The worker's loop: sleep on the mailbox, run what the gateway posted, post
 * the result back (handshake in src/runtime/mailbox.ts). Returns on Stop.
 */
async function serve (box: Mailbox, byIndex: ReadonlyArray<LoadedUnit | undefined>): Promise<void> {
  const h = box.header
  Atomics.store(h, SERVING, 1)
  for (;;) {
    const state = Atomics.load(h, STATE)
    if (state === State.Stop) return
    if (state !== State.Task) {
      // Empty, or Done not yet collected: sleep (this thread, not the
      // gateway) until the state changes. Never spin.
      Atomics.wait(h, STATE, state)
      continue
    }
    let errorLen = 0
    try {
      await runBatch(box, byIndex[h[UNIT] ?? -1], h[ROWS] ?? 0)
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err)
      const coded = msg.startsWith('FW_ERR_') ? msg : `FW_ERR_RUNTIME_INFERENCE_FAILED: ${msg}`
      errorLen = encoder.encodeInto(coded, box.errorBytes).written
    }
    h[ERROR_LEN] = errorLen
    // Result and ERROR_LEN are written; this exchange hands the mailbox back.
    // It fails only if the gateway said Stop meanwhile (shutdown): then quit.
    if (Atomics.compareExchange(h, STATE, State.Task, State.Done) !== State.Task) return
    Atomics.notify(h, STATE)
  }
}

async function runBatch (box: Mailbox, unit: LoadedUnit | undefined, rows: number): Promise<void> {
  if (unit === undefined) throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: unit is not loaded in class ${init.classId}`)
  const n = rows * unit.inputDim
  // onnxruntime rejects tensors over a SharedArrayBuffer: copy the batch into
  // this unit's own buffer (a view of its first n values; the buffer is
  // allocated once per unit, only the small view object per batch).
  const input = new Float32Array(unit.inputBuffer, 0, n)
  input.set(box.input.subarray(0, n))
  const t0 = performance.now()
  const c0 = affinity?.threadCpuTimeNs() ?? 0
  const out = await unit.session.run({ [unit.inputName]: new ort.Tensor('float32', input, [rows, unit.inputDim]) })
  // One intra-op thread: session.run computes on this thread, so this
  // thread's CPU time is the batch's compute. Without the addon, wall time.
  const inferenceNs = Math.round((performance.now() - t0) * 1e6)
  const cpuNs = affinity === null ? inferenceNs : Math.round(affinity.threadCpuTimeNs() - c0)
  const tensor = out[unit.outputName]
  if (tensor === undefined) throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: output ${unit.outputName} missing`)
  box.output.set(tensor.data as Float32Array)
  box.setTimes(inferenceNs, cpuNs)
}
