// Memory layout of a ring page: a fixed number of cost events stored by
// column kind in ONE ArrayBuffer, so a full page crosses to the sink thread
// as a transfer (no copy, no structured-clone walk over objects) and comes
// back empty for reuse. Strings travel as ids into a dictionary that grows by
// the few new strings each page carries; at steady state (fixed tenants,
// routes, models) a page carries none.
//
// Per event, row-major: 5 × Float64, 17 × Uint32, 36 bytes of event id.

import { STRING_FIELDS } from './cost-event.js'

/** Float64 slots: ts_ms, queue_wait_ms, inference_ms, compute_seconds, cost_estimate_usd. */
export const F64_PER_EVENT = 5
/** Uint32 slots: http_status, batch_rows, rows, flags, then one dictionary id per STRING_FIELDS entry. */
export const U32_PER_EVENT = 4 + STRING_FIELDS.length
export const U32_STRINGS = 4
export const ID_BYTES = 36

export const FLAG_CACHE_HIT = 1
export const FLAG_FALLBACK = 2
export const FLAG_DEGRADED = 4

export function pageByteLength (capacity: number): number {
  return capacity * (F64_PER_EVENT * 8 + U32_PER_EVENT * 4 + ID_BYTES)
}

export interface PageViews {
  readonly f64: Float64Array
  readonly u32: Uint32Array
  readonly id: Uint8Array
}

export function pageViews (buf: ArrayBuffer, capacity: number): PageViews {
  const u32At = capacity * F64_PER_EVENT * 8
  const idAt = u32At + capacity * U32_PER_EVENT * 4
  return {
    f64: new Float64Array(buf, 0, capacity * F64_PER_EVENT),
    u32: new Uint32Array(buf, u32At, capacity * U32_PER_EVENT),
    id: new Uint8Array(buf, idAt, capacity * ID_BYTES),
  }
}

/** A filled page on its way to the sink. */
export interface PageMessage {
  readonly t: 'page'
  readonly buf: ArrayBuffer
  readonly capacity: number
  readonly n: number
  /** Dictionary entries added since the previous page, in id order. */
  readonly strings: string[]
  /** The dictionary was cleared before this page's strings (it outgrew its cap). */
  readonly reset: boolean
  /** Date.now() at the page's first event (the sink's backstop cut is timed from its batch's oldest page). */
  readonly openedAt: number
  /** The last page of a flush period: the sink cuts its batch right after it. */
  readonly cut: boolean
}
