// One worker's mailbox: a SharedArrayBuffer through which the scheduler hands
// a batch to an inference worker and gets the result back, without
// postMessage.
//
// Why not one Piscina task per batch: at batch-1 load a Piscina task cost
// ~36 µs of gateway-thread CPU (structured clone, MessagePort, task
// bookkeeping) plus ~40 µs on the worker, against ~10 µs of inference
// (CPU profile and per-thread CPU at 2,000 req/s). Piscina still owns the
// threads (creation, workerData, replacement after a crash, shutdown): each
// worker runs one long-lived "serve" task that loops on its mailbox.
//
// Handshake on STATE (Int32 slot 0), one batch at a time per mailbox:
//   EMPTY --main writes input, UNIT, ROWS, then store(TASK) + notify--> TASK
//   TASK  --worker copies input out, runs, writes output/ERROR, then
//          compareExchange(TASK->DONE) + notify--> DONE (the exchange fails
//          only if the gateway said STOP meanwhile: the worker then returns)
//   DONE  --main copies the result out, store(EMPTY)--> EMPTY
//   any   --main store(STOP) + notify--> STOP: the serve task returns.
// Each side writes the data it owns BEFORE the Atomics.store that hands the
// mailbox over, and reads it only AFTER observing the new state with an
// Atomics operation; Atomics are sequentially consistent, so the plain
// typed-array writes are visible to the other thread by then. The worker
// sleeps in Atomics.wait (a futex: no CPU while idle); the gateway thread
// waits with Atomics.waitAsync, which resumes it through the event loop.

export const State = {
  Empty: 0,
  Task: 1,
  Done: 2,
  Stop: 3,
} as const

// Int32 header slots.
export const STATE = 0
export const UNIT = 1
export const ROWS = 2
/** 0 = success; otherwise the UTF-8 length of an error message stored in the output area. */
export const ERROR_LEN = 3
/** Set to 1 by the worker when its serve task starts (the gateway knows the mailbox has a thread). */
export const SERVING = 4
const HEADER_BYTES = 64
// Float64 slots after the Int32 header: worker-measured times of the batch.
const F64_INFERENCE_NS = 0
const F64_CPU_NS = 1
const TIMES_BYTES = 16
/** Room for an error message, bytes (it is written over the output area). */
const MIN_ERROR_BYTES = 1024

export interface MailboxSize {
  /** Largest batch input, in float32 values (max over units of maxBatchSize × inputDim). */
  readonly inputValues: number
  /** Largest batch output, in float32 values. */
  readonly outputValues: number
}

/** Views over one mailbox; both threads build the same views over the same buffer. */
export class Mailbox {
  readonly sab: SharedArrayBuffer
  readonly header: Int32Array
  readonly times: Float64Array
  readonly input: Float32Array
  readonly output: Float32Array
  readonly errorBytes: Uint8Array

  constructor (sab: SharedArrayBuffer, size: MailboxSize) {
    this.sab = sab
    this.header = new Int32Array(sab, 0, HEADER_BYTES / 4)
    this.times = new Float64Array(sab, HEADER_BYTES, TIMES_BYTES / 8)
    const inputAt = HEADER_BYTES + TIMES_BYTES
    this.input = new Float32Array(sab, inputAt, size.inputValues)
    const outputAt = inputAt + size.inputValues * 4
    this.output = new Float32Array(sab, outputAt, outputValuesFor(size))
    this.errorBytes = new Uint8Array(sab, outputAt, this.output.byteLength)
  }

  static create (size: MailboxSize): Mailbox {
    const bytes = HEADER_BYTES + TIMES_BYTES + size.inputValues * 4 + outputValuesFor(size) * 4
    return new Mailbox(new SharedArrayBuffer(bytes), size)
  }

  get inferenceNs (): number { return this.times[F64_INFERENCE_NS] ?? 0 }
  get cpuNs (): number { return this.times[F64_CPU_NS] ?? 0 }

  setTimes (inferenceNs: number, cpuNs: number): void {
    this.times[F64_INFERENCE_NS] = inferenceNs
    this.times[F64_CPU_NS] = cpuNs
  }
}

function outputValuesFor (size: MailboxSize): number {
  return Math.max(size.outputValues, MIN_ERROR_BYTES / 4)
}
