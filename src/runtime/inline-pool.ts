// A class that runs its batches on the gateway thread (`"runtime": "inline"`).
//
// Why: for a small model one hand-off to a worker thread costs more than the
// inference. At batch-1 rates the gateway and the worker each wake once per
// request, and on a 2-vCPU VM each wake-up runs on cold caches; in one
// measured run at 3,000 req/s the worker thread alone spent ~68 µs of CPU per
// request on a ~9 µs inference (perf/RESULTS.md). Inline, a batch costs its inference and nothing else.
//
// What it costs: the event loop is blocked while a batch runs (no request is
// read, no response written, for that batch's inference time), the class has
// no CPU set or nice of its own (it runs where `server.cpus` puts the
// gateway), and a crash inside onnxruntime takes the whole process down, not
// one worker. Meant for light models only; heavy ones belong on workers.
//
// Billing: a worker bills its thread's CPU time, read in the worker, where
// the clock costs the gateway nothing. Here it would be read on the gateway
// thread, twice per batch, and `CLOCK_THREAD_CPUTIME_ID` has no vDSO: each
// read is a syscall (~0.9 µs in a loop on this VM). In paired cycles at 2,000 req/s the two reads
// cost 6.4 µs per request, 3% of the whole process (perf/RESULTS.md,
// session 16). So an inline batch is billed its wall time (performance.now,
// a vDSO read that the latency figures take anyway), capped against
// preemption (`wall-billing.ts`).

import { threadId } from 'node:worker_threads'
import type { ExecutableUnit } from '../control-plane/registry.js'
import type { ServiceClassConfig } from '../control-plane/config-types.js'
import { FairwayError } from '../errors.js'
import { loadAffinity } from './affinity.js'
import type { BatchPool } from './batch-pool.js'
import { workerError } from './class-pool.js'
import { loadUnits, runUnit, type LoadedUnit } from './onnx-units.js'
import { WallBilling } from './wall-billing.js'
import { workerUnits, type InferResult, type InferTask, type PingResult } from './worker-protocol.js'

export class InlinePool implements BatchPool {
  readonly serviceClass: ServiceClassConfig
  /** One batch at a time: there is one gateway thread. */
  readonly capacity = 1
  readonly runsOnCaller = true
  private readonly executable: readonly ExecutableUnit[]
  /** Per unit: its session and buffers, and what its batches are billed (wall time, capped against preemption). */
  private units = new Map<string, { readonly loaded: LoadedUnit, readonly billing: WallBilling }>()
  private readonly affinity = loadAffinity()
  private closing = false

  constructor (serviceClass: ServiceClassConfig, units: readonly ExecutableUnit[]) {
    this.serviceClass = serviceClass
    this.executable = units
  }

  async start (): Promise<PingResult[]> {
    try {
      const loaded = loadUnits(this.serviceClass.id, this.serviceClass.device, workerUnits(this.executable))
      this.units = new Map([...loaded].map(([key, u]) => [key, { loaded: u, billing: new WallBilling(u.input.length / u.inputDim) }]))
    } catch (err) {
      throw workerError(err, 'FW_ERR_RUNTIME_MODEL_LOAD')
    }
    return [{ classId: this.serviceClass.id, affinity: this.affinity?.getThreadAffinity() ?? null, nice: this.affinity?.getThreadNice() ?? null, threadId }]
  }

  run (task: InferTask): Promise<InferResult> {
    // At once, on this thread. No setImmediate of its own: the scheduler
    // calls run from its pump, which already runs in the check phase after
    // the poll phase that read the batch's requests (so a burst read in one
    // poll phase is one batch), and it starts the next batch in a later loop
    // turn (`runsOnCaller`). A deferral here cost a whole extra loop turn per
    // batch: an epoll_pwait syscall plus libuv's and uWS's per-turn hooks.
    // The clocks start inside runUnit, so only the inference is billed.
    const entry = this.units.get(task.unit)
    if (this.closing || entry === undefined) {
      return Promise.reject(new FairwayError('FW_ERR_RUNTIME_INFERENCE_FAILED', [`class ${this.serviceClass.id} cannot take a batch of ${task.rows} row(s) of ${task.unit} now`]))
    }
    const unit = entry.loaded
    let off = 0
    for (const p of task.parts) {
      if (off + p.input.length > unit.input.length) {
        return Promise.reject(new FairwayError('FW_ERR_RUNTIME_INFERENCE_FAILED', [`class ${this.serviceClass.id} cannot take a batch of ${task.rows} row(s) of ${task.unit}: over its model's maxBatchSize`]))
      }
      unit.input.set(p.input, off)
      off += p.input.length
    }
    try {
      const r = runUnit(unit, task.rows, null)
      return Promise.resolve({ output: r.output, inferenceNs: r.inferenceNs, cpuNs: entry.billing.bill(task.rows, r.inferenceNs) })
    } catch (err) {
      return Promise.reject(workerError(err, 'FW_ERR_RUNTIME_INFERENCE_FAILED'))
    }
  }

  async close (): Promise<void> {
    // Batches run at once, so none is left waiting; later ones are refused.
    this.closing = true
  }
}
