// One inference worker thread of a service class's Piscina pool.
// Start-up order matters: pin the thread to the class's CPU set FIRST, then
// create onnxruntime sessions, so the intra-op threads onnxruntime spawns
// inherit the mask (threads created after pinning get the same affinity).

import { threadId } from 'node:worker_threads'
import { workerData } from 'piscina'
import { loadAffinity } from '../src/runtime/affinity.js'
import { WORKER_THREAD_PREFIX } from '../src/runtime/background-nice.js'
import { loadUnits, runUnit, type LoadedUnit } from '../src/runtime/onnx-units.js'
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

// A class that lends workers to other classes also serves their units.
const units = loadUnits(init.classId, init.device, init.units)
const threadCpuNs = affinity === null ? null : (): number => affinity.threadCpuTimeNs()

export default async function run (task: PingTask | ServeTask): Promise<PingResult | null> {
  if ('ping' in task) return { classId: init.classId, affinity: pinned, nice, threadId }
  serve(new Mailbox(task.serve, task.size), task.units.map((key) => units.get(key)))
  return null
}

const encoder = new TextEncoder()

/**
 * The worker's loop: sleep on the mailbox, run what the gateway posted, post
 * the result back (handshake in src/runtime/mailbox.ts). Returns on Stop.
 */
function serve (box: Mailbox, byIndex: ReadonlyArray<LoadedUnit | undefined>): void {
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
      runBatch(box, byIndex[h[UNIT] ?? -1], h[ROWS] ?? 0)
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

function runBatch (box: Mailbox, unit: LoadedUnit | undefined, rows: number): void {
  if (unit === undefined) throw new Error(`FW_ERR_RUNTIME_INFERENCE_FAILED: unit is not loaded in class ${init.classId}`)
  const n = rows * unit.inputDim
  // onnxruntime rejects tensors over a SharedArrayBuffer: copy the batch out
  // of the mailbox into the unit's own input buffer.
  unit.input.set(box.input.subarray(0, n))
  const r = runUnit(unit, rows, threadCpuNs)
  box.output.set(r.output)
  box.setTimes(r.inferenceNs, r.cpuNs)
}
