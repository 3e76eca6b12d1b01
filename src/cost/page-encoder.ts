// Sink side of the ring: turns a page of events into TabSeparated bytes in
// COST_EVENT_COLUMNS order, appended straight into the batch buffer that
// becomes the spool file. Bytes, not strings: building a 4 MB batch by string
// concatenation made ~1M cons-strings per batch live long enough to reach the
// old generation (GC took 40% of the sink thread, measured); here only the
// short strings of float formatting are allocated, and they die young.
//
// Every field is forced into its column's domain here (non-finite numbers
// become 0, out-of-range values are clamped, a malformed event_id is
// replaced) so one bad event can never make ClickHouse reject — and the sink
// dead-letter — a whole batch of good ones.

import { COST_EVENT_COLUMNS } from './cost-event.js'
import { F64_PER_EVENT, FLAG_CACHE_HIT, FLAG_DEGRADED, FLAG_FALLBACK, ID_BYTES, U32_PER_EVENT, U32_STRINGS, pageViews, type PageMessage } from './event-page.js'
import { uuidv7 } from './uuidv7.js'

export const COST_EVENTS_HEADER = COST_EVENT_COLUMNS.join('\t') + '\n'

const TSV_SPECIAL = /[\t\n\r\\\0]/
const TSV_SPECIAL_G = /[\t\n\r\\\0]/g
const TSV_ESCAPES: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r', '\\': '\\\\', '\0': '\\0' }

export function tsvEscape (s: string): string {
  return TSV_SPECIAL.test(s) ? s.replace(TSV_SPECIAL_G, (c) => TSV_ESCAPES[c] ?? c) : s
}

const TAB = 9
const NL = 10
const DASH = 45
const ZERO = 48

/** 1 for [0-9a-fA-F], else 0. */
const HEX = new Uint8Array(256)
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1

// Number writers: (buffer, position, value) -> new position. Free functions
// over a local position keep the per-row loop free of object field traffic.

function putUint (b: Buffer, p: number, x: number): number {
  if (x < 2147483648) {
    let v = x | 0
    if (v < 10) { b[p] = ZERO + v; return p + 1 }
    let digits = 1
    for (let t = v; t >= 10; t = (t / 10) | 0) digits++
    const end = p + digits
    for (let q = end - 1; q >= p; q--) { const t = (v / 10) | 0; b[q] = ZERO + v - t * 10; v = t }
    return end
  }
  // Up to 2^53: high part, then the low 9 digits zero-padded.
  const hi = Math.floor(x / 1e9)
  let lo = x - hi * 1e9
  p = putUint(b, p, hi)
  for (let q = p + 8; q >= p; q--) { const t = (lo / 10) | 0; b[q] = ZERO + lo - t * 10; lo = t }
  return p + 9
}

function putAscii (b: Buffer, p: number, s: string): number {
  for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i)
  return p
}

/** Any finite number in shortest round-trip form; non-finite as 0. */
function putFloat (b: Buffer, p: number, x: number): number {
  if (!(x - x === 0)) { b[p] = ZERO; return p + 1 }
  if (x >= 0 && x < 9e15 && Math.floor(x) === x) return putUint(b, p, x)
  return putAscii(b, p, String(x))
}

function putInt64 (b: Buffer, p: number, x: number): number {
  if (!(x - x === 0) || Math.abs(x) >= 9e18) { b[p] = ZERO; return p + 1 }
  const t = Math.trunc(x)
  return t >= 0 && t < 9e15 ? putUint(b, p, t) : putAscii(b, p, String(t))
}

/** Decimal(18, 12): 12 places, no exponent, clamped into |x| < 1e6. */
function putUsd (b: Buffer, p: number, x: number): number {
  if (!(x - x === 0)) { b[p] = ZERO; return p + 1 }
  if (x >= 1e6) x = 999999
  else if (x <= -1e6) x = -999999
  if (x >= 9000 || x <= -9000) return putAscii(b, p, x.toFixed(12)) // x * 1e12 would pass 2^53
  // Round before taking the sign, as roundUsd does (Math.round goes half-up).
  let k = Math.round(x * 1e12)
  if (k < 0) { b[p++] = DASH; k = -k }
  const whole = Math.floor(k / 1e12)
  let frac = k - whole * 1e12 // < 1e12: fits the digit loop below exactly
  p = putUint(b, p, whole)
  b[p] = 46 // '.'
  for (let i = 12; i >= 1; i--) { const t = Math.floor(frac / 10); b[p + i] = ZERO + frac - t * 10; frac = t }
  return p + 13
}

function putBytes (b: Buffer, p: number, src: Buffer): number {
  const n = src.length
  if (n > 24) { src.copy(b, p); return p + n }
  for (let i = 0; i < n; i++) b[p + i] = src[i] as number
  return p + n
}

/** A growable byte buffer: the batch being built. */
export class ByteWriter {
  buf: Buffer
  pos = 0

  constructor (capacity: number) {
    this.buf = Buffer.allocUnsafe(Math.max(1024, capacity))
  }

  ensure (n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  /** Latin-1/ASCII only (numbers, ids, headers). */
  ascii (s: string): void {
    this.ensure(s.length)
    this.pos = putAscii(this.buf, this.pos, s)
  }
}

/** Longest a row can be apart from its dictionary strings: 36-byte id, 24 tabs, newline, 10 numbers ≤ 24 bytes. */
const ROW_FIXED = 36 + 25 + 10 * 24

/** Where the 36 characters of a UUID must be dashes. */
const DASH_AT = new Uint8Array(36)
for (const i of [8, 13, 18, 23]) DASH_AT[i] = 1

export class PageEncoder {
  private dict: Buffer[] = []
  private longest = 0
  /** Events whose event_id was not a UUID and got a fresh UUIDv7. */
  invalidIds = 0

  /** Appends the page's rows to `w`. */
  encodeInto (m: PageMessage, w: ByteWriter): void {
    if (m.reset) { this.dict = []; this.longest = 0 }
    for (const str of m.strings) {
      const e = Buffer.from(tsvEscape(str), 'utf8')
      if (e.length > this.longest) this.longest = e.length
      this.dict.push(e)
    }
    const d = this.dict
    const { f64, u32, id } = pageViews(m.buf, m.capacity)
    w.ensure(m.n * (ROW_FIXED + 13 * this.longest))
    const b = w.buf
    let p = w.pos
    for (let i = 0; i < m.n; i++) {
      const f = i * F64_PER_EVENT
      const u = i * U32_PER_EVENT
      const s = u + U32_STRINGS
      // event_id: copy the 36 bytes, checking the UUID shape on the way.
      const o = i * ID_BYTES
      let bad = 0
      for (let k = 0; k < ID_BYTES; k++) {
        const c = id[o + k] as number
        bad |= DASH_AT[k] === 1 ? (c === DASH ? 0 : 1) : 1 - (HEX[c] as number)
        b[p + k] = c
      }
      if (bad === 0) p += ID_BYTES
      else { p = putAscii(b, p, uuidv7()); this.invalidIds++ }
      b[p++] = TAB
      p = putInt64(b, p, f64[f] as number)
      for (let k = 0; k < 9; k++) { b[p++] = TAB; p = putBytes(b, p, d[u32[s + k] as number] as Buffer) }
      b[p++] = TAB
      const http = u32[u] as number
      p = putUint(b, p, http > 65535 ? 0 : http)
      b[p++] = TAB
      p = putFloat(b, p, f64[f + 1] as number)
      b[p++] = TAB
      p = putFloat(b, p, f64[f + 2] as number)
      b[p++] = TAB
      p = putUint(b, p, u32[u + 1] as number)
      b[p++] = TAB
      p = putUint(b, p, u32[u + 2] as number)
      b[p++] = TAB
      p = putFloat(b, p, f64[f + 3] as number)
      const flags = u32[u + 3] as number
      b[p++] = TAB
      b[p++] = (flags & FLAG_CACHE_HIT) !== 0 ? 49 : ZERO
      b[p++] = TAB
      b[p++] = (flags & FLAG_FALLBACK) !== 0 ? 49 : ZERO
      b[p++] = TAB
      b[p++] = (flags & FLAG_DEGRADED) !== 0 ? 49 : ZERO
      b[p++] = TAB
      p = putUsd(b, p, f64[f + 4] as number)
      for (let k = 9; k < 13; k++) { b[p++] = TAB; p = putBytes(b, p, d[u32[s + k] as number] as Buffer) }
      b[p++] = NL
    }
    w.pos = p
  }

  /** The page's rows as text (tests, debugging). */
  encode (m: PageMessage): string {
    const w = new ByteWriter(m.n * 256)
    this.encodeInto(m, w)
    return w.buf.toString('utf8', 0, w.pos)
  }
}
