// ClickHouse's Native format, the subset the spool uses: a block is
// varUInt(columns), varUInt(rows), then per column its name, its type (both
// varUInt length + bytes) and its values, column after column, little-endian.
// Why Native: ClickHouse reads it with no parsing (fixed-width columns are
// copied, LowCardinality arrives already dictionary-encoded), where
// TabSeparated cost ~1 µs per 25-column row to parse and ~0.6 µs to format
// in JS (measured; see docs/cost.md#performance).
//
// Layout checked against files ClickHouse 26.7 writes itself
// (`INSERT INTO FUNCTION file(…, 'Native')`): no block-info prefix, no
// per-column serialization byte; UUID = its two 64-bit halves, each
// little-endian; Bool = 1 byte; Decimal(18, S) = Int64 of value·10^S;
// LowCardinality(String) = UInt64 1 (shared dictionaries with additional
// keys), UInt64 flags (index width | has additional keys | update
// dictionary), UInt64 key count, the keys as Strings, UInt64 row count, the
// indexes.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { CostError, errorText } from './cost-error.js'

export const LC_STRING = 'LowCardinality(String)'
/** SharedDictionariesWithAdditionalKeys: the LowCardinality serialization version. */
const LC_VERSION = 1
/** HasAdditionalKeysBit | NeedUpdateDictionary; the low byte is the index width (0 = UInt8 … 3 = UInt64). */
const LC_FLAGS = (1 << 9) | (1 << 10)

/** Bytes per value of the fixed-width types the spool writes. */
const FIXED_WIDTH: Readonly<Record<string, number>> = {
  UUID: 16, Int64: 8, UInt64: 8, Float64: 8, UInt32: 4, UInt16: 2, UInt8: 1, Bool: 1, 'Decimal(18, 12)': 8,
}

export function fixedWidth (type: string): number | undefined {
  return FIXED_WIDTH[type]
}

export function varUInt (n: number): Buffer {
  const out: number[] = []
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
  out.push(n)
  return Buffer.from(out)
}

export function uint64 (n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

/** A String value: varUInt byte length, then the UTF-8 bytes. */
export function nativeString (s: string | Buffer): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s
  return Buffer.concat([varUInt(bytes.length), bytes])
}

/**
 * The chunks of one LowCardinality(String) column: `keys` (already
 * String-encoded) and one index per row into them, narrowed to the smallest
 * width that holds keys.length.
 */
export function lowCardinalityChunks (keys: readonly Buffer[], indexes: Uint32Array): Buffer[] {
  const width = keys.length <= 0x100 ? 0 : keys.length <= 0x10000 ? 1 : 2
  const narrow = width === 0 ? Uint8Array.from(indexes) : width === 1 ? Uint16Array.from(indexes) : indexes
  return [
    uint64(LC_VERSION), uint64(LC_FLAGS | width), uint64(keys.length), ...keys,
    uint64(indexes.length), Buffer.from(narrow.buffer, narrow.byteOffset, narrow.byteLength),
  ]
}

export interface NativeColumn {
  readonly name: string
  readonly type: string
}

/** Buffered forward reads of a file: what the header walk needs without reading the column data. */
class Cursor {
  private buf = Buffer.alloc(64 << 10)
  private start = 0
  private end = 0
  pos = 0

  constructor (private readonly fd: number) {}

  need (n: number): Buffer {
    if (this.pos < this.start || this.pos + n > this.end) {
      if (n > this.buf.length) this.buf = Buffer.alloc(n)
      const bytesRead = readSync(this.fd, this.buf, 0, this.buf.length, this.pos)
      this.start = this.pos
      this.end = this.pos + bytesRead
      if (bytesRead < n) throw new Error(`truncated at byte ${this.pos}`)
    }
    const at = this.pos - this.start
    this.pos += n
    return this.buf.subarray(at, at + n)
  }

  varUInt (): number {
    let n = 0
    for (let shift = 1; ; shift *= 0x80) {
      const b = this.need(1)[0] as number
      n += (b & 0x7f) * shift
      if (b < 0x80) return n
      if (shift > 2 ** 42) throw new Error('varUInt too long')
    }
  }

  uint64 (): number {
    return Number(this.need(8).readBigUInt64LE())
  }

  string (): string {
    return this.need(this.varUInt()).toString('utf8')
  }
}

/**
 * Names and types of the columns in a Native file's first block, skipping
 * over the values (a few small reads, whatever the batch size). Types the
 * spool never writes, or a truncated file, are FW_ERR_COST_SPOOL_CORRUPT;
 * failures to open or read it are FW_ERR_COST_SPOOL_IO (retried).
 * The reads are synchronous: the sink thread calls this for every member
 * of a group insert, and each async read was a round trip through libuv's
 * pool (two thread wake-ups) for a few bytes of a file written seconds before.
 */
export async function readNativeColumns (path: string): Promise<NativeColumn[]> {
  let fd: number
  // An I/O failure (EMFILE, EIO, ...) is retried by the sink; only a file
  // that reads but is not a Native block is corrupt (and goes to dead/).
  try { fd = openSync(path, 'r') } catch (err) { throw new CostError('FW_ERR_COST_SPOOL_IO', path, errorText(err)) }
  try {
    const c = new Cursor(fd)
    const columns = c.varUInt()
    const rows = c.varUInt()
    const out: NativeColumn[] = []
    for (let i = 0; i < columns; i++) {
      const name = c.string()
      const type = c.string()
      out.push({ name, type })
      const width = fixedWidth(type)
      if (width !== undefined) { c.pos += width * rows; continue }
      if (type !== LC_STRING) throw new Error(`column ${name} has type ${type}, which the spool never writes`)
      c.uint64() // version
      const flags = c.uint64()
      const keys = c.uint64()
      for (let k = 0; k < keys; k++) { const len = c.varUInt(); c.pos += len }
      const indexes = c.uint64()
      c.pos += indexes * 2 ** (flags & 0xff)
    }
    if (c.pos > fstatSync(fd).size) throw new Error('truncated')
    return out
  } catch (err) {
    if (err instanceof CostError) throw err
    // System errors carry a syscall; a bad length or a short read does not.
    if (typeof (err as NodeJS.ErrnoException).syscall === 'string') throw new CostError('FW_ERR_COST_SPOOL_IO', path, errorText(err))
    throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', path, `not a Native block: ${errorText(err)}`)
  } finally {
    closeSync(fd)
  }
}
