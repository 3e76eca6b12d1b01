// Sink side of the ring: gathers the events of ring pages into the columns
// of ONE ClickHouse Native block (see native-format.ts), the bytes that
// become the spool file and, unchanged, the insert. Serialized once, in
// typed arrays: numbers are copied as they are (no float-to-text), strings
// become per-batch LowCardinality indexes (one typed-array lookup per field;
// the ring already turned them into dictionary ids). ~0.3 µs per event on
// the sink thread in a loop, ~0.5-0.6 µs per event for the whole sink
// thread in the pipeline, where TabSeparated text took ~1.3 µs (measured).
//
// Every field is forced into its column's domain here (non-finite numbers
// become 0, out-of-range values are clamped, a malformed event_id is
// replaced) so one bad event can never make ClickHouse reject — and the sink
// dead-letter — a whole batch of good ones.

import { endianness } from 'node:os'
import { COST_EVENT_COLUMNS, STRING_FIELDS } from './cost-event.js'
import { F64_PER_EVENT, FLAG_CACHE_HIT, FLAG_DEGRADED, FLAG_FALLBACK, ID_BYTES, U32_PER_EVENT, U32_STRINGS, pageViews, type PageMessage } from './event-page.js'
import { LC_STRING, fixedWidth, lowCardinalityChunks, nativeString, varUInt } from './native-format.js'
import { TABLE_COLUMNS } from './schema.js'
import { uuidv7 } from './uuidv7.js'

// Typed arrays are host-endian and go to disk as they are; Native is little-endian.
if (endianness() !== 'LE') throw new Error('fairway cost: the Native spool writer needs a little-endian host')

const TYPES = TABLE_COLUMNS.cost_events as Readonly<Record<string, string>>

/** 255 for a non-hex character, else its value. */
const HEX = new Uint8Array(256).fill(255)
for (let i = 0; i < 16; i++) { HEX['0123456789abcdef'.charCodeAt(i)] = i; HEX['0123456789ABCDEF'.charCodeAt(i)] = i }
/** Text offset of the first hex digit of each of the 16 UUID bytes. */
const HEX_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34]
/** Where byte j goes in ClickHouse's UUID: each 8-byte half is a little-endian number. */
const UUID_SLOT = HEX_AT.map((_, j) => j < 8 ? 7 - j : 23 - j)
const DASH = 45
const TWO32 = 4294967296

/** Writes the 16 bytes of the UUID text at src[o…o+36) into dst at d; false if it is not a UUID. */
function putUuid (src: Uint8Array, o: number, dst: Uint8Array, d: number): boolean {
  if (src[o + 8] !== DASH || src[o + 13] !== DASH || src[o + 18] !== DASH || src[o + 23] !== DASH) return false
  let bad = 0
  for (let j = 0; j < 16; j++) {
    const p = o + (HEX_AT[j] as number)
    const hi = HEX[src[p] as number] as number
    const lo = HEX[src[p + 1] as number] as number
    bad |= hi | lo
    dst[d + (UUID_SLOT[j] as number)] = (hi << 4) | lo
  }
  return bad < 16
}

/** An Int64 as two 32-bit halves (lo, hi) at i32[k], i32[k+1]; exact for any integer-valued double below 2^63. */
function putInt64 (i32: Int32Array, k: number, x: number): void {
  const hi = Math.floor(x / TWO32)
  i32[k] = x - hi * TWO32 // exact (no fmod); the store wraps it to the low 32 bits
  i32[k + 1] = hi
}

/** Decimal(18, 12): value·10^12, clamped into |x| < 1e6 like the column's range; non-finite as 0. */
function putUsd (i32: Int32Array, k: number, x: number): void {
  if (!(x - x === 0)) x = 0
  else if (x >= 1e6) x = 999999
  else if (x <= -1e6) x = -999999
  if (x < 9000 && x > -9000) { putInt64(i32, k, Math.round(x * 1e12)); return }
  // x·1e12 would pass 2^53: take the exact 12-place decimal of the double.
  const v = BigInt(x.toFixed(12).replace('.', ''))
  i32[k] = Number(BigInt.asIntN(32, v))
  i32[k + 1] = Number(BigInt.asIntN(32, v >> 32n))
}

/** Per batch and string column: the keys used so far and each dictionary id's key index + 1. */
class LocalDictionary {
  readonly keys: Buffer[] = [nativeString('')] // ClickHouse writes the default value first; so do we
  private readonly byText = new Map<string, number>([['', 0]])
  slot = new Int32Array(256)

  /** Key index of dictionary entry `id` (text `s`); first use in this batch adds the key. */
  add (id: number, s: string): number {
    if (id >= this.slot.length) {
      const next = new Int32Array(Math.max(id + 1, this.slot.length * 2))
      next.set(this.slot)
      this.slot = next
    }
    let k = this.byText.get(s)
    if (k === undefined) { k = this.keys.length; this.keys.push(nativeString(s)); this.byText.set(s, k) }
    this.slot[id] = k + 1
    return k
  }

  /** The ring restarted its dictionary: its ids mean other strings now. */
  forgetIds (): void {
    this.slot.fill(0)
  }
}

/** The columns of one batch, growing by doubling. */
class Columns {
  n = 0
  uuid: Uint8Array
  ts: Int32Array
  usd: Int32Array
  http: Uint16Array
  f64: Float64Array // queue_wait_ms, inference_ms, compute_seconds, column after column
  u32: Uint32Array // batch_rows, rows
  flags: Uint8Array // cache_hit, fallback, degraded
  strings: Uint32Array // key indexes, STRING_FIELDS.length columns

  constructor (private cap: number) {
    this.uuid = new Uint8Array(cap * 16)
    this.ts = new Int32Array(cap * 2)
    this.usd = new Int32Array(cap * 2)
    this.http = new Uint16Array(cap)
    this.f64 = new Float64Array(cap * 3)
    this.u32 = new Uint32Array(cap * 2)
    this.flags = new Uint8Array(cap * 3)
    this.strings = new Uint32Array(cap * STRING_FIELDS.length)
  }

  get capacity (): number {
    return this.cap
  }

  /** Room for `more` rows. Column-major arrays move each column to its new stride. */
  ensure (more: number): void {
    if (this.n + more <= this.cap) return
    let cap = this.cap * 2
    while (cap < this.n + more) cap *= 2
    const old = this.cap
    const regrow = <T extends Uint8Array | Int32Array | Uint16Array | Uint32Array | Float64Array>(a: T, per: number, make: (len: number) => T): T => {
      const b = make(cap * per)
      for (let c = 0; c < per; c++) b.set(a.subarray(c * old, c * old + this.n), c * cap)
      return b
    }
    const grow = <T extends Uint8Array | Int32Array>(a: T, per: number, make: (len: number) => T): T => {
      const b = make(cap * per)
      b.set(a.subarray(0, this.n * per))
      return b
    }
    this.uuid = grow(this.uuid, 16, (l) => new Uint8Array(l))
    this.ts = grow(this.ts, 2, (l) => new Int32Array(l))
    this.usd = grow(this.usd, 2, (l) => new Int32Array(l))
    this.http = regrow(this.http, 1, (l) => new Uint16Array(l))
    this.f64 = regrow(this.f64, 3, (l) => new Float64Array(l))
    this.u32 = regrow(this.u32, 2, (l) => new Uint32Array(l))
    this.flags = regrow(this.flags, 3, (l) => new Uint8Array(l))
    this.strings = regrow(this.strings, STRING_FIELDS.length, (l) => new Uint32Array(l))
    this.cap = cap
  }
}

const bytes = (a: ArrayBufferView, from: number, to: number): Buffer => Buffer.from(a.buffer, a.byteOffset + from, to - from)

export class NativeBatchEncoder {
  /** The ring's dictionary: id → string, as pages announce them. */
  private dict: string[] = []
  private cols: Columns | null = null
  private locals: LocalDictionary[] = []
  /** Events whose event_id was not a UUID and got a fresh UUIDv7. */
  invalidIds = 0

  /** Rows in the open batch. */
  get rows (): number {
    return this.cols?.n ?? 0
  }

  /** Appends the page's events to the open batch (opening one sized for `expectRows`). */
  add (m: PageMessage, expectRows: number): void {
    if (m.reset) { this.dict = []; for (const l of this.locals) l.forgetIds() }
    for (const s of m.strings) this.dict.push(s)
    let c = this.cols
    if (c === null) {
      c = this.cols = new Columns(Math.max(1024, expectRows))
      this.locals = STRING_FIELDS.map(() => new LocalDictionary())
    }
    c.ensure(m.n)
    const { f64, u32, id } = pageViews(m.buf, m.capacity)
    const cap = c.capacity
    const base = c.n
    const dict = this.dict
    const locals = this.locals
    const nStrings = STRING_FIELDS.length
    const { uuid, ts, usd, http, u32: counts, flags, strings } = c
    const floats = c.f64
    for (let i = 0; i < m.n; i++) {
      const r = base + i
      const f = i * F64_PER_EVENT
      const u = i * U32_PER_EVENT
      if (!putUuid(id, i * ID_BYTES, uuid, r * 16)) {
        putUuid(Buffer.from(uuidv7(), 'latin1'), 0, uuid, r * 16)
        this.invalidIds++
      }
      const t = f64[f] as number
      putInt64(ts, r * 2, t - t === 0 && Math.abs(t) < 9e18 ? Math.trunc(t) : 0)
      putUsd(usd, r * 2, f64[f + 4] as number)
      const status = u32[u] as number
      http[r] = status > 65535 ? 0 : status
      for (let k = 0; k < 3; k++) {
        const x = f64[f + 1 + k] as number
        floats[k * cap + r] = x - x === 0 ? x : 0
      }
      counts[r] = u32[u + 1] as number
      counts[cap + r] = u32[u + 2] as number
      const bits = u32[u + 3] as number
      flags[r] = (bits & FLAG_CACHE_HIT) !== 0 ? 1 : 0
      flags[cap + r] = (bits & FLAG_FALLBACK) !== 0 ? 1 : 0
      flags[2 * cap + r] = (bits & FLAG_DEGRADED) !== 0 ? 1 : 0
      for (let k = 0; k < nStrings; k++) {
        const g = u32[u + U32_STRINGS + k] as number
        const l = locals[k] as LocalDictionary
        const hit = g < l.slot.length ? l.slot[g] as number : 0
        strings[k * cap + r] = hit !== 0 ? hit - 1 : l.add(g, dict[g] ?? '')
      }
    }
    c.n = base + m.n
  }

  /**
   * Closes the open batch: the chunks of its Native block, in
   * COST_EVENT_COLUMNS order, to be written one after the other (views of
   * the column arrays, no copy). Empty when no batch is open.
   */
  finish (): Buffer[] {
    const c = this.cols
    if (c === null || c.n === 0) return []
    this.cols = null
    const n = c.n
    const cap = c.capacity
    const out: Buffer[] = [varUInt(COST_EVENT_COLUMNS.length), varUInt(n)]
    for (const name of COST_EVENT_COLUMNS) {
      const type = TYPES[name] as string
      out.push(nativeString(name), nativeString(type))
      const s = (STRING_FIELDS as readonly string[]).indexOf(name)
      if (s >= 0 && type === LC_STRING) {
        out.push(...lowCardinalityChunks((this.locals[s] as LocalDictionary).keys, c.strings.subarray(s * cap, s * cap + n)))
        continue
      }
      const data = this.column(c, name)
      if (data.length !== n * (fixedWidth(type) ?? -1)) throw new Error(`fairway cost: column ${name} ${type} does not match the Native writer`)
      out.push(data)
    }
    this.locals = []
    return out
  }

  private column (c: Columns, name: string): Buffer {
    const n = c.n
    const cap = c.capacity
    switch (name) {
      case 'event_id': return bytes(c.uuid, 0, n * 16)
      case 'ts_ms': return bytes(c.ts, 0, n * 8)
      case 'cost_estimate_usd': return bytes(c.usd, 0, n * 8)
      case 'http_status': return bytes(c.http, 0, n * 2)
      case 'queue_wait_ms': return bytes(c.f64, 0, n * 8)
      case 'inference_ms': return bytes(c.f64, cap * 8, (cap + n) * 8)
      case 'compute_seconds': return bytes(c.f64, 2 * cap * 8, (2 * cap + n) * 8)
      case 'batch_rows': return bytes(c.u32, 0, n * 4)
      case 'rows': return bytes(c.u32, cap * 4, (cap + n) * 4)
      case 'cache_hit': return bytes(c.flags, 0, n)
      case 'fallback': return bytes(c.flags, cap, cap + n)
      case 'degraded': return bytes(c.flags, 2 * cap, 2 * cap + n)
      default: throw new Error(`fairway cost: no Native writer for column ${name}`)
    }
  }
}
