// The request-path side of the cost pipeline: a bounded ring of pages on the
// gateway's main thread. push() writes an event's fields into the current
// page (typed-array stores and one Map lookup per string field, no
// allocation once the dictionary is warm) and hands full pages to the sink.
// The bound is the number of pages: pages in the sink's hands count until it
// returns them, so a stalled sink fills the ring and push() says no — the
// caller counts that as a drop instead of the process growing without limit.

import type { CostEvent } from './cost-event.js'
import {
  F64_PER_EVENT, FLAG_CACHE_HIT, FLAG_DEGRADED, FLAG_FALLBACK, ID_BYTES, U32_PER_EVENT, U32_STRINGS,
  pageByteLength, pageViews, type PageMessage,
} from './event-page.js'

/** Past this many distinct strings the dictionary restarts (bounds memory if a field is high-cardinality). */
export const DICT_MAX = 65_536

interface Page {
  buf: ArrayBuffer
  f64: Float64Array
  u32: Uint32Array
  id: Uint8Array
  n: number
}

export class EventRing {
  readonly pageCapacity: number
  readonly maxPages: number
  private page: Page | null = null
  private readonly free: Page[] = []
  private allocated = 0
  /** Events in pages the sink holds. */
  private inSink = 0
  private readonly dict = new Map<string, number>()
  private newStrings: string[] = []
  private pendingReset = false
  /** Date.now() when the current page got its first event. */
  private openedAt = 0

  constructor (capacity: number, private readonly send: (msg: PageMessage) => void) {
    // Small rings (tests) get small pages so the bound is still exact-ish.
    this.pageCapacity = Math.max(16, Math.min(1024, Math.ceil(capacity / 4)))
    this.maxPages = Math.max(2, Math.ceil(capacity / this.pageCapacity))
  }

  get capacity (): number {
    return this.pageCapacity * this.maxPages
  }

  /** Events in the page being filled. */
  get pageEvents (): number {
    return this.page?.n ?? 0
  }

  /** Events not yet handed back by the sink (current page + pages in flight). */
  get depth (): number {
    return (this.page?.n ?? 0) + this.inSink
  }

  /** False when every page is full or in the sink's hands. Throws only on a non-object event. */
  push (e: CostEvent, nodeId: string): boolean {
    let p = this.page
    if (p === null) {
      p = this.take()
      if (p === null) return false
      this.page = p
    }
    const i = p.n
    if (i === 0) this.openedAt = Date.now()
    const f = i * F64_PER_EVENT
    const f64 = p.f64
    f64[f] = e.ts_ms
    f64[f + 1] = e.queue_wait_ms
    f64[f + 2] = e.inference_ms
    f64[f + 3] = e.compute_seconds
    f64[f + 4] = e.cost_estimate_usd
    const u = i * U32_PER_EVENT
    const u32 = p.u32
    u32[u] = e.http_status
    u32[u + 1] = e.batch_rows > 0 ? e.batch_rows : 0
    u32[u + 2] = e.rows > 0 ? e.rows : 0
    u32[u + 3] = (e.cache_hit === true ? FLAG_CACHE_HIT : 0) | (e.fallback === true ? FLAG_FALLBACK : 0) | (e.degraded === true ? FLAG_DEGRADED : 0)
    u32[u + U32_STRINGS] = this.intern(e.tenant_id)
    u32[u + U32_STRINGS + 1] = this.intern(e.route)
    u32[u + U32_STRINGS + 2] = this.intern(e.model_id)
    u32[u + U32_STRINGS + 3] = this.intern(e.model_version)
    u32[u + U32_STRINGS + 4] = this.intern(e.variant)
    u32[u + U32_STRINGS + 5] = this.intern(e.tier)
    u32[u + U32_STRINGS + 6] = this.intern(e.service_class)
    u32[u + U32_STRINGS + 7] = this.intern(e.model_class)
    u32[u + U32_STRINGS + 8] = this.intern(e.status)
    u32[u + U32_STRINGS + 9] = this.intern(e.price_version)
    u32[u + U32_STRINGS + 10] = this.intern(e.cost_center)
    u32[u + U32_STRINGS + 11] = this.intern(e.region)
    u32[u + U32_STRINGS + 12] = this.intern(typeof e.node_id === 'string' && e.node_id !== '' ? e.node_id : nodeId)
    const id = e.event_id
    const o = i * ID_BYTES
    const bytes = p.id
    if (typeof id === 'string' && id.length === ID_BYTES) {
      for (let k = 0; k < ID_BYTES; k++) bytes[o + k] = id.charCodeAt(k)
    } else {
      bytes[o] = 0 // the sink replaces a malformed id with a fresh UUIDv7
    }
    p.n = i + 1
    if (p.n === this.pageCapacity) {
      this.page = null
      this.post(p, false)
    }
    return true
  }

  /**
   * Hands the current page to the sink even if it is not full (timer,
   * flush, close); `cut`: the sink cuts its batch after this page. False
   * when there was no event to hand over.
   */
  flushPage (cut = false): boolean {
    const p = this.page
    if (p === null || p.n === 0) return false
    this.page = null
    this.post(p, cut)
    return true
  }

  /** A page came back from the sink: its events are the sink's responsibility now. */
  release (buf: ArrayBuffer, n: number): void {
    this.inSink -= n
    const v = pageViews(buf, this.pageCapacity)
    this.free.push({ buf, f64: v.f64, u32: v.u32, id: v.id, n: 0 })
  }

  private take (): Page | null {
    const p = this.free.pop()
    if (p !== undefined) return p
    if (this.allocated === this.maxPages) return null
    this.allocated++
    const buf = new ArrayBuffer(pageByteLength(this.pageCapacity))
    const v = pageViews(buf, this.pageCapacity)
    return { buf, f64: v.f64, u32: v.u32, id: v.id, n: 0 }
  }

  private post (p: Page, cut: boolean): void {
    const msg: PageMessage = { t: 'page', buf: p.buf, capacity: this.pageCapacity, n: p.n, strings: this.newStrings, reset: this.pendingReset, openedAt: this.openedAt, cut }
    this.newStrings = []
    this.pendingReset = false
    this.inSink += p.n
    this.send(msg)
    if (this.dict.size > DICT_MAX) {
      this.dict.clear()
      this.pendingReset = true
    }
  }

  private intern (v: unknown): number {
    const s = typeof v === 'string' ? v : (v === undefined || v === null ? '' : String(v))
    let id = this.dict.get(s)
    if (id === undefined) {
      id = this.dict.size
      this.dict.set(s, id)
      this.newStrings.push(s)
    }
    return id
  }
}
