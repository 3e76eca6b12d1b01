// What the gateway thread and the cost sink thread say to each other, and
// the counters the sink publishes in shared memory so stats() on the main
// thread is a few loads, never a round trip.

import type { CostBackendConfig, QueryFormat } from './clickhouse-backend.js'
import type { PageMessage } from './event-page.js'
import type { FaultOptions } from './fault-injector.js'

export interface SinkInit {
  readonly backend: CostBackendConfig
  readonly spoolDir: string
  readonly batchRows: number
  readonly flushMs: number
  readonly insertMs: number
  readonly spoolMaxBytes: number
  readonly retryBaseMs: number
  readonly retryMaxMs: number
  readonly faults: FaultOptions
  readonly counters: SharedArrayBuffer
}

/** End of a flush period with no event in the ring's open page: cut the batch now. */
export interface CutMessage {
  readonly t: 'cut'
}

export type ToSink =
  | PageMessage
  | CutMessage
  | { readonly t: 'capacity', readonly id: number, readonly data: string, readonly rows: number }
  | { readonly t: 'flush', readonly id: number }
  | { readonly t: 'query', readonly id: number, readonly sql: string, readonly format: QueryFormat, readonly readonly: boolean, readonly fresh: boolean, readonly params?: Record<string, unknown> }
  | { readonly t: 'close', readonly id: number, readonly timeoutMs: number }

export interface CloseResult {
  readonly remainingBatches: number
  readonly remainingRows: number
  readonly timedOut: boolean
}

export type FromSink =
  | { readonly t: 'ready' }
  | { readonly t: 'fatal', readonly code: string, readonly message: string }
  /** An emptied page going back to the ring. */
  | { readonly t: 'page', readonly buf: ArrayBuffer, readonly n: number }
  | { readonly t: 'reply', readonly id: number, readonly ok: true, readonly value: unknown }
  | { readonly t: 'reply', readonly id: number, readonly ok: false, readonly code: string, readonly message: string }
  | { readonly t: 'log', readonly msg: string }

/** Slots of the shared counter array (written by the sink only). */
export const C = {
  RECEIVED_ROWS: 0,
  INSERTED_ROWS: 1,
  INSERTED_BATCHES: 2,
  SPOOLED_BATCHES: 3,
  SPOOLED_ROWS: 4,
  SPOOLED_BYTES: 5,
  INSERT_FAILURES: 6,
  DROPPED_SPOOL_ROWS: 7,
  REPLAYED_BATCHES: 8,
  REPLAYED_ROWS: 9,
  DEAD_LETTER_BATCHES: 10,
  DEAD_LETTER_ROWS: 11,
  INVALID_IDS: 12,
  LOST_ROWS: 13,
  SCHEMA_VERSION: 14,
  LAST_INSERT_US: 15,
} as const

export const COUNTER_SLOTS = 16

export class Counters {
  private readonly a: BigInt64Array

  constructor (buf: SharedArrayBuffer) {
    this.a = new BigInt64Array(buf)
  }

  static buffer (): SharedArrayBuffer {
    return new SharedArrayBuffer(COUNTER_SLOTS * 8)
  }

  add (slot: number, n: number): void {
    Atomics.add(this.a, slot, BigInt(n))
  }

  set (slot: number, n: number): void {
    Atomics.store(this.a, slot, BigInt(n))
  }

  get (slot: number): number {
    return Number(Atomics.load(this.a, slot))
  }
}
