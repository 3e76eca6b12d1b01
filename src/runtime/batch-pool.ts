// What the scheduler needs from whatever runs a class's batches (as Piscina
// keeps its task queue behind an interface): ClassPool runs them on pinned
// worker threads, InlinePool on the gateway thread itself.

import type { ServiceClassConfig } from '../control-plane/config-types.js'
import type { InferResult, InferTask, PingResult } from './worker-protocol.js'

export interface BatchPool {
  readonly serviceClass: ServiceClassConfig
  /** Batches it runs at once; the scheduler never hands it more. */
  readonly capacity: number
  /**
   * True when run() computes the batch on the calling thread before it
   * returns (the promise is already settled). The scheduler then starts the
   * next batch in a later turn of the event loop, so that sockets are read
   * between two batches; false: run() hands the batch to another thread.
   */
  readonly runsOnCaller: boolean
  /** Resolves once every unit is loaded and warm, with where each executor runs. */
  start (): Promise<PingResult[]>
  /** Runs one batch; rejects with a FairwayError (FW_ERR_RUNTIME_*) on failure. */
  run (task: InferTask): Promise<InferResult>
  /** Fails what has not run yet and releases the executors. */
  close (): Promise<void>
}
