// Open Inference Protocol v2 (KServe / Triton) request validation and response
// encoding, for JSON and MessagePack bodies of the same shape. Validation
// errors name the field and carry a stable FW_ERR code.

import { C1, Packr } from 'msgpackr'
import type { ModelConfig } from '../control-plane/config-types.js'
import { fwError } from '../errors.js'

export interface InferRequest {
  readonly id: string | undefined
  readonly rows: number
  readonly data: Float32Array
  /** Client-requested timeout (ms), already validated; null when absent. */
  readonly timeoutMs: number | null
}

type Obj = Record<string, unknown>

function isObj (v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

export function parseInferRequest (body: unknown, model: ModelConfig): InferRequest {
  if (!isObj(body)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'request body must be an object with an "inputs" array')
  const id = body.id
  if (id !== undefined && typeof id !== 'string') throw fwError('FW_ERR_INFER_INPUT_INVALID', '"id" must be a string')
  const inputs = body.inputs
  if (!Array.isArray(inputs) || inputs.length === 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', '"inputs" must be a non-empty array')
  if (inputs.length !== 1) throw fwError('FW_ERR_INFER_INPUT_INVALID', `model ${model.id} takes exactly one input, "${model.input.name}"; got ${inputs.length}`)
  const inp: unknown = inputs[0]
  if (!isObj(inp)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'inputs[0] must be an object')
  if (inp.name !== model.input.name) throw fwError('FW_ERR_INFER_INPUT_INVALID', `inputs[0].name must be "${model.input.name}", got ${describe(inp.name)}`)
  if (inp.datatype !== model.input.datatype) throw fwError('FW_ERR_INFER_DATATYPE', `inputs[0].datatype must be "${model.input.datatype}", got ${describe(inp.datatype)}`)
  const dim = model.input.shape[1] ?? 0
  const shape = inp.shape
  if (!Array.isArray(shape) || shape.length !== 2 || !Number.isInteger(shape[0]) || (shape[0] as number) < 1 || shape[1] !== dim) {
    throw fwError('FW_ERR_INFER_SHAPE', `inputs[0].shape must be [rows, ${dim}] with rows >= 1, got ${describe(shape)}`)
  }
  const rows = shape[0] as number
  if (rows > model.maxRowsPerRequest) throw fwError('FW_ERR_INFER_BATCH_TOO_LARGE', `inputs[0] has ${rows} rows; model ${model.id} takes at most ${model.maxRowsPerRequest} per request`)
  const data = toFloat32(inp.data, rows * dim)

  const outputs = body.outputs
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) throw fwError('FW_ERR_INFER_INPUT_INVALID', '"outputs" must be an array')
    for (const o of outputs) {
      if (!isObj(o) || o.name !== model.output.name) throw fwError('FW_ERR_INFER_INPUT_INVALID', `requested output must be "${model.output.name}"`)
    }
  }
  let timeoutMs: number | null = null
  const params = body.parameters
  if (params !== undefined) {
    if (!isObj(params)) throw fwError('FW_ERR_INFER_INPUT_INVALID', '"parameters" must be an object')
    const t = params.timeout_ms
    if (t !== undefined) {
      if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'parameters.timeout_ms must be a positive number')
      timeoutMs = t
    }
  }
  return { id, rows, data, timeoutMs }
}

/** A value for an error message: JSON where JSON can say it (a BigInt cannot), never a throw. */
function describe (v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x: unknown) => typeof x === 'bigint' ? `${x}n` : x) ?? String(v)
  } catch {
    return Object.prototype.toString.call(v)
  }
}

/** Rows nest at most this deep in `data` (a [rows, N] tensor needs 2). */
const MAX_DATA_DEPTH = 32

const NOT_FINITE = 'inputs[0].data must hold finite FP32 numbers (NaN, Infinity and magnitudes beyond 3.4e38 are not)'

/**
 * Accepts flat or nested (row-major) number arrays, or a Float32Array (the
 * gateway's MessagePack decoder's, or msgpackr's typed-array extension with
 * `moreTypes`). Every value must be finite once rounded to float32.
 */
function toFloat32 (data: unknown, expected: number): Float32Array {
  if (data instanceof Float32Array) {
    if (data.length !== expected) throw fwError('FW_ERR_INFER_ELEMENT_COUNT', `inputs[0].data has ${data.length} elements; shape needs ${expected}`)
    for (let i = 0; i < data.length; i++) {
      const v = data[i] as number
      if (v - v !== 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', NOT_FINITE)
    }
    // msgpackr may hand out a view over the message buffer, which uWS
    // reclaims after the callback: keep our own copy.
    return data.slice()
  }
  if (!Array.isArray(data)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'inputs[0].data must be an array of numbers')
  const out = new Float32Array(expected)
  const n = fill(data, out, 0, expected, 1)
  if (n !== expected) throw fwError('FW_ERR_INFER_ELEMENT_COUNT', `inputs[0].data has ${n} elements; shape needs ${expected}`)
  return out
}

// Returns the element count seen; writes only while within `out`. Depth is
// bounded so that a body of 20,000 nested brackets is a 400, not a stack
// overflow.
function fill (arr: readonly unknown[], out: Float32Array, start: number, expected: number, depth: number): number {
  if (depth > MAX_DATA_DEPTH) throw fwError('FW_ERR_INFER_INPUT_INVALID', `inputs[0].data nests deeper than ${MAX_DATA_DEPTH} levels`)
  let n = start
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i]
    if (typeof v === 'number') {
      // Finite as a double is not enough: 1e39 rounds to Infinity in float32.
      const f = Math.fround(v)
      if (f - f !== 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', NOT_FINITE)
      if (n < expected) out[n] = f
      n++
    } else if (Array.isArray(v)) {
      n = fill(v, out, n, expected, depth + 1)
    } else {
      throw fwError('FW_ERR_INFER_INPUT_INVALID', `inputs[0].data must hold numbers, found ${v === null ? 'null' : typeof v}`)
    }
  }
  return n
}

/**
 * JSON response, assembled as a string: Float32Array.join formats each value
 * as the shortest double that round-trips, like JSON.stringify, without
 * building an intermediate number array.
 */
export function encodeJsonResponse (model: ModelConfig, version: string, id: string | undefined, rows: number, out: Float32Array): string {
  const idPart = id === undefined ? '' : `,"id":${JSON.stringify(id)}`
  return `{"model_name":${JSON.stringify(model.id)},"model_version":${JSON.stringify(version)}${idPart},"outputs":[{"name":${JSON.stringify(model.output.name)},"datatype":"FP32","shape":[${rows},${model.output.shape[1] ?? 0}],"data":[${out.join(',')}]}]}`
}

// Floats are written as float32: the outputs are float32, so nothing is lost.
const packr = new Packr({ useFloat32: 1, useRecords: false })

export function encodeMsgpack (value: unknown): Buffer {
  return packr.pack(value)
}

/**
 * Decodes a MessagePack request. Requests in the common shape (maps with
 * ASCII string keys, strings, numbers, arrays, nil and booleans) go through
 * a small decoder that writes each `inputs[i].data` array of finite numbers
 * straight into a Float32Array, skipping the JS number array and its copy;
 * anything else (bin, ext, 64-bit integers, non-ASCII strings, non-string
 * keys, `__proto__`, trailing or missing bytes) is decoded by msgpackr, so
 * what a request means never depends on which decoder read it. In a CPU
 * profile of WebSocket + MessagePack at saturation, msgpackr's decode was
 * ~12% of the gateway thread.
 */
export function decodeMsgpack (buf: Buffer): unknown {
  const v = fastDecode(buf)
  if (v !== FALLBACK) return v
  const w: unknown = packr.unpack(buf)
  // msgpackr answers the never-used byte 0xc1 with a marker object, not an error.
  if (w === C1) throw new Error('MessagePack 0xc1 is not a value')
  return w
}

/** Returned (never thrown: a throw deoptimises the caller) when the fast decoder declines. */
const FALLBACK: unique symbol = Symbol('fallback')
type Decoded = unknown

// One decode at a time (the gateway thread is single-threaded and decoding
// never re-enters), so the cursor and source live at module level instead of
// in a per-call object. Multi-byte numbers are read big-endian through an
// 8-byte scratch (x86 and arm64 are little-endian): no DataView per message.
const EMPTY = Buffer.alloc(0)
let src: Buffer = EMPTY
let pos = 0
const SCRATCH = new Uint8Array(8)
const SCRATCH_F64 = new Float64Array(SCRATCH.buffer)
const SCRATCH_F32 = new Float32Array(SCRATCH.buffer, 0, 1)

/** Maps and arrays open around the cursor; deeper than MAX_DEPTH goes to msgpackr. */
let depth = 0
const MAX_DEPTH = 64

function fastDecode (buf: Buffer): Decoded | typeof FALLBACK {
  src = buf
  pos = 0
  depth = 0
  const v = readValue(1)
  const ok = v !== FALLBACK && pos === buf.length
  src = EMPTY // do not keep the request alive
  return ok ? v : FALLBACK
}

/** Big-endian unsigned integer of `n` (1, 2 or 4) bytes at pos; the caller checked the bounds. */
function readUint (n: number): number {
  let v = 0
  for (let i = 0; i < n; i++) v = v * 256 + (src[pos + i] as number)
  pos += n
  return v
}

function readF64 (): number {
  for (let i = 0; i < 8; i++) SCRATCH[7 - i] = src[pos + i] as number
  pos += 8
  return SCRATCH_F64[0] as number
}

function readF32 (): number {
  for (let i = 0; i < 4; i++) SCRATCH[3 - i] = src[pos + i] as number
  pos += 4
  return SCRATCH_F32[0] as number
}

/**
 * Bytes that follow each MessagePack type byte from 0xc0 to 0xdf before its
 * payload (a length, or the number itself); -1 for the types declined (bin,
 * ext, 64-bit integers, the never-used 0xc1).
 */
const FOLLOW = new Int8Array(32).fill(-1)
for (const [type, follow] of [[0xc0, 0], [0xc2, 0], [0xc3, 0], [0xca, 4], [0xcb, 8], [0xcc, 1], [0xcd, 2], [0xce, 4], [0xd0, 1], [0xd1, 2], [0xd2, 4],
  [0xd9, 1], [0xda, 2], [0xdb, 4], [0xdc, 2], [0xdd, 4], [0xde, 2], [0xdf, 4]] as const) FOLLOW[type - 0xc0] = follow

// ctx: 0 anywhere, 1 the top-level map (its "inputs" holds input maps),
// 2 "inputs" and the input maps in it (an input's "data" may become a
// Float32Array).
function readValue (ctx: 0 | 1 | 2): Decoded | typeof FALLBACK {
  if (pos >= src.length) return FALLBACK
  const b = src[pos++] as number
  if (b < 0x80) return b
  if (b < 0x90) return readMap(b & 0x0f, ctx)
  if (b < 0xa0) return readArray(b & 0x0f, ctx)
  if (b < 0xc0) return readStr(b & 0x1f)
  if (b >= 0xe0) return b - 0x100
  const follow = FOLLOW[b - 0xc0] as number
  if (follow < 0 || pos + follow > src.length) return FALLBACK // bin, ext, 64-bit integers, never-used; or cut short
  switch (b) {
    case 0xc0: return null
    case 0xc2: return false
    case 0xc3: return true
    case 0xca: return readF32()
    case 0xcb: return readF64()
    case 0xcc: case 0xcd: case 0xce: return readUint(follow)
    case 0xd0: { const v = readUint(1); return v >= 0x80 ? v - 0x100 : v }
    case 0xd1: { const v = readUint(2); return v >= 0x8000 ? v - 0x10000 : v }
    case 0xd2: { const v = readUint(4); return v >= 0x80000000 ? v - 0x100000000 : v }
    case 0xd9: case 0xda: case 0xdb: return readStr(readUint(follow))
    case 0xdc: case 0xdd: return readArray(readUint(follow), ctx)
    default: return readMap(readUint(follow), ctx) // 0xde, 0xdf
  }
}

// Short strings (keys, model names, datatypes) repeat from request to
// request: the last string seen per (length, first byte, last byte) slot is
// reused when its bytes match, as msgpackr caches keys, so a repeated
// string costs a byte comparison instead of a new string.
const STRING_CACHE: Array<string | undefined> = new Array<string | undefined>(1024).fill(undefined)
const CACHED_MAX = 24

/** ASCII only: other bytes go to msgpackr, whose UTF-8 handling then applies. */
function readStr (len: number): string | typeof FALLBACK {
  const end = pos + len
  if (end > src.length) return FALLBACK
  for (let i = pos; i < end; i++) if ((src[i] as number) >= 0x80) return FALLBACK
  if (len === 0) return ''
  let slot = -1
  if (len <= CACHED_MAX) {
    slot = ((len << 5) ^ ((src[pos] as number) << 2) ^ (src[end - 1] as number)) & 1023
    const hit = STRING_CACHE[slot]
    if (hit !== undefined && hit.length === len) {
      let i = 0
      while (i < len && hit.charCodeAt(i) === src[pos + i]) i++
      if (i === len) { pos = end; return hit }
    }
  }
  const s = src.toString('latin1', pos, end)
  if (slot >= 0) STRING_CACHE[slot] = s
  pos = end
  return s
}

function readMap (n: number, ctx: 0 | 1 | 2): Decoded | typeof FALLBACK {
  // Each entry takes at least two bytes: a longer claim is malformed (and
  // must not run a loop of that length).
  if (n * 2 > src.length - pos || depth >= MAX_DEPTH) return FALLBACK
  depth++
  const o: Record<string, unknown> = {}
  for (let i = 0; i < n; i++) {
    const k = readValue(0)
    if (typeof k !== 'string' || k === '__proto__') return FALLBACK
    let v: Decoded | typeof FALLBACK
    if (ctx === 1 && k === 'inputs') v = readValue(2)
    else if (ctx === 2 && k === 'data') v = readData()
    else v = readValue(0)
    if (v === FALLBACK) return FALLBACK
    o[k] = v
  }
  depth--
  return o
}

function readArray (n: number, ctx: 0 | 1 | 2): Decoded | typeof FALLBACK {
  // Each element takes at least one byte: a longer claim is malformed (and
  // must not allocate an array of that length).
  if (n > src.length - pos || depth >= MAX_DEPTH) return FALLBACK
  depth++
  const a: unknown[] = new Array(n)
  // Inside "inputs" each element is an input map; elsewhere plain values.
  const inner = ctx === 2 ? 2 : 0
  for (let i = 0; i < n; i++) {
    const v = readValue(inner)
    if (v === FALLBACK) return FALLBACK
    a[i] = v
  }
  depth--
  return a
}

/**
 * An input's "data": a flat array of finite numbers becomes a Float32Array
 * (rounded as assigning to one rounds). The numbers are read in this loop,
 * not through readValue, so none is boxed on the way. Anything else (nested
 * rows, a non-number, NaN, a cut-short message) is re-read by readValue as
 * a plain array, for parseInferRequest to accept or refuse as usual.
 */
function readData (): Decoded | typeof FALLBACK {
  const start = pos
  const len = src.length
  const h = src[pos]
  let n: number
  if (h !== undefined && h >= 0x90 && h < 0xa0) {
    n = h & 0x0f
    pos += 1
  } else if ((h === 0xdc && pos + 3 <= len) || (h === 0xdd && pos + 5 <= len)) {
    pos += 1
    n = readUint(h === 0xdc ? 2 : 4)
  } else {
    return readValue(0)
  }
  if (n > len - pos) return FALLBACK
  const out = new Float32Array(n)
  // Locals, not the module-level cursor, in the loop: 64 numbers took ~2.1 µs
  // through readValue and the module cursor, ~0.7 µs this way (measured).
  const s = src
  const dv = new DataView(s.buffer, s.byteOffset, len)
  let p = pos
  for (let i = 0; i < n; i++) {
    // Past the end s[p] is undefined, which no test below accepts: the
    // generic re-read then declines the cut-short message.
    const b = s[p] as number
    let v: number
    if (b === 0xcb && p + 9 <= len) {
      v = dv.getFloat64(p + 1)
      p += 9
    } else if (b < 0x80) {
      v = b
      p++
    } else if (b >= 0xe0) {
      v = b - 0x100
      p++
    } else if (b === 0xca && p + 5 <= len) {
      v = dv.getFloat32(p + 1)
      p += 5
    } else if (b >= 0xcc && b <= 0xd2 && b !== 0xcf && p + 1 + (FOLLOW[b - 0xc0] as number) <= len) {
      // The other integers msgpackr returns as numbers (64-bit ones go the generic way, to be declined).
      const f = FOLLOW[b - 0xc0] as number
      v = b === 0xcc ? dv.getUint8(p + 1) : b === 0xcd ? dv.getUint16(p + 1) : b === 0xce ? dv.getUint32(p + 1) : b === 0xd0 ? dv.getInt8(p + 1) : b === 0xd1 ? dv.getInt16(p + 1) : dv.getInt32(p + 1)
      p += 1 + f
    } else {
      pos = start
      return readValue(0)
    }
    out[i] = v
    // NaN, ±Infinity, or a double beyond float32's range: the plain array, for the validator to refuse.
    if ((out[i] as number) - (out[i] as number) !== 0) { pos = start; return readValue(0) }
  }
  pos = p
  return out
}

/** What a refusal needs from a WebSocket message: its id, and the model it names (for the cost event). */
export interface MessageHead {
  readonly id: string | null
  readonly model: string | null
  readonly version: string | null
}

/**
 * The top-level "id", "model" and "version" strings of a MessagePack map,
 * skipping every other value without building it: refusing a message over a
 * connection's in-flight limit then costs a byte walk, not a decode, and
 * leaves no garbage (for a slow reader's 20,000 refusals the RSS difference
 * against full decodes was 1–2 MB, within noise). Null when the bytes are not such a map or hold
 * something the fast path declines (non-ASCII, 64-bit integers, bin, deep
 * nesting): the caller then decodes in full (messageHead does both).
 */
export function peekMessageHead (buf: Buffer): MessageHead | null {
  src = buf
  pos = 0
  depth = 0
  let head: MessageHead | null = null
  const b = src[0]
  let n = -1
  if (b !== undefined && b >= 0x80 && b < 0x90) { n = b & 0x0f; pos = 1 } else if (b === 0xde && buf.length >= 3) { pos = 1; n = readUint(2) } else if (b === 0xdf && buf.length >= 5) { pos = 1; n = readUint(4) }
  if (n >= 0) {
    let id: string | null = null
    let model: string | null = null
    let version: string | null = null
    let ok = true
    for (let i = 0; i < n && ok; i++) {
      const k = readValue(0)
      if (k === 'id' || k === 'model' || k === 'version') {
        const v = readValue(0)
        if (v === FALLBACK) ok = false
        else {
          // The last occurrence wins, as in a full decode.
          const str = typeof v === 'string' ? v : null
          if (k === 'id') id = str
          else if (k === 'model') model = str
          else version = str
        }
      } else {
        ok = k !== FALLBACK && skipValue()
      }
    }
    if (ok) head = { id, model, version }
  }
  src = EMPTY
  return head
}

/** peekMessageHead, or when it declines, the same three fields from a full decode (null if even that fails or is not a map). */
export function messageHead (buf: Buffer): MessageHead | null {
  const head = peekMessageHead(buf)
  if (head !== null) return head
  let msg: unknown
  try { msg = decodeMsgpack(buf) } catch { return null }
  return headOf(msg)
}

/** The three head fields of an already decoded message (JSON or MessagePack); null unless it is an object. */
export function headOf (msg: unknown): MessageHead | null {
  if (!isObj(msg)) return null
  const str = (v: unknown): string | null => typeof v === 'string' ? v : null
  return { id: str(msg.id), model: str(msg.model), version: str(msg.version) }
}

/** Bytes of payload after the type byte (and its length field) for fixed-size types 0xc0..0xdf; -1: not fixed-size. */
const FIXED = new Int8Array(32).fill(-1)
for (const [type, size] of [[0xc0, 0], [0xc2, 0], [0xc3, 0], [0xca, 4], [0xcb, 8], [0xcc, 1], [0xcd, 2], [0xce, 4], [0xcf, 8],
  [0xd0, 1], [0xd1, 2], [0xd2, 4], [0xd3, 8], [0xd4, 2], [0xd5, 3], [0xd6, 5], [0xd7, 9], [0xd8, 17]] as const) FIXED[type - 0xc0] = size

/** Moves the cursor past one value of any type; false when the bytes end first or are not MessagePack. */
function skipValue (): boolean {
  const len = src.length
  if (pos >= len) return false
  const b = src[pos++] as number
  if (b < 0x80 || b >= 0xe0) return true
  if (b < 0x90) return skipValues((b & 0x0f) * 2)
  if (b < 0xa0) return skipValues(b & 0x0f)
  if (b < 0xc0) { pos += b & 0x1f; return pos <= len }
  const fixed = FIXED[b - 0xc0] as number
  if (fixed >= 0) { pos += fixed; return pos <= len }
  switch (b) {
    case 0xc4: case 0xc5: case 0xc6: case 0xd9: case 0xda: case 0xdb: { // bin, str: length, bytes
      const w = b === 0xc4 || b === 0xd9 ? 1 : b === 0xc5 || b === 0xda ? 2 : 4
      if (pos + w > len) return false
      pos += readUint(w)
      return pos <= len
    }
    case 0xc7: case 0xc8: case 0xc9: { // ext: length, type byte, bytes
      const w = b === 0xc7 ? 1 : b === 0xc8 ? 2 : 4
      if (pos + w > len) return false
      pos += readUint(w) + 1
      return pos <= len
    }
    case 0xdc: case 0xdd: case 0xde: case 0xdf: {
      const w = b === 0xdc || b === 0xde ? 2 : 4
      if (pos + w > len) return false
      const n = readUint(w)
      return skipValues(b >= 0xde ? n * 2 : n)
    }
    default: return false // 0xc1, never used
  }
}

function skipValues (n: number): boolean {
  if (n > src.length - pos || depth >= MAX_DEPTH) return false
  depth++
  for (let i = 0; i < n; i++) if (!skipValue()) return false
  depth--
  return true
}

/**
 * MessagePack inference response, written straight into one buffer: the same
 * map msgpackr would produce from the object (floats as float32, lossless for
 * FP32 outputs), without building the object, the number array of
 * `Array.from(out)` or msgpackr's generic type dispatch per value. The
 * constant part (names, version, datatype) is encoded once per model and
 * version. In a CPU profile of WebSocket + MessagePack at saturation,
 * msgpackr's pack alone was ~7% of the gateway thread; measured alone, this
 * encoder takes 0.43 µs per 1×8 response against 1.99 µs.
 */
export function msgpackResponse (model: ModelConfig, version: string, id: string | undefined, rows: number, out: Float32Array): Buffer {
  const head = responseHead(model, version)
  const idBytes = id === undefined ? 0 : Buffer.byteLength(id)
  const cols = model.output.shape[1] ?? 0
  const n = out.length
  const size = 1 + head.modelPart.length + (id === undefined ? 0 : 3 + headerSize(STR, idBytes) + idBytes) + head.outputPart.length +
    1 + headerSize(UINT, rows) + headerSize(UINT, cols) + 5 + headerSize(ARRAY, n) + 5 * n
  const buf = Buffer.allocUnsafe(size)
  let o = 0
  buf[o++] = id === undefined ? 0x83 : 0x84 // fixmap of 3 or 4 entries
  buf.set(head.modelPart, o)
  o += head.modelPart.length
  if (id !== undefined) {
    buf.set(ID_KEY, o)
    o += ID_KEY.length
    o = writeHeader(buf, o, STR, idBytes)
    o += buf.write(id, o, 'utf8')
  }
  buf.set(head.outputPart, o)
  o += head.outputPart.length
  buf[o++] = 0x92 // shape: fixarray of 2
  o = writeHeader(buf, o, UINT, rows)
  o = writeHeader(buf, o, UINT, cols)
  buf.set(DATA_KEY, o)
  o += DATA_KEY.length
  o = writeHeader(buf, o, ARRAY, n)
  // Big-endian float32s: the value's bytes through a one-float scratch view
  // (x86 and arm64 are little-endian), cheaper than Buffer.writeFloatBE.
  for (let i = 0; i < n; i++) {
    F32[0] = out[i] as number
    buf[o] = 0xca
    buf[o + 1] = F32_BYTES[3] as number
    buf[o + 2] = F32_BYTES[2] as number
    buf[o + 3] = F32_BYTES[1] as number
    buf[o + 4] = F32_BYTES[0] as number
    o += 5
  }
  return buf
}

interface ResponseHead {
  /** "model_name", the model id, "model_version", the version. */
  readonly modelPart: Buffer
  /** "outputs", [ { "name", the output name, "datatype": "FP32", "shape" (its value follows). */
  readonly outputPart: Buffer
}

// Keyed by the model's config object, so a reloaded catalog never meets a
// head encoded from an older one.
const heads = new WeakMap<ModelConfig, Map<string, ResponseHead>>()

function responseHead (model: ModelConfig, version: string): ResponseHead {
  let byVersion = heads.get(model)
  if (byVersion === undefined) {
    byVersion = new Map()
    heads.set(model, byVersion)
  }
  let h = byVersion.get(version)
  if (h === undefined) {
    h = {
      modelPart: Buffer.concat([str('model_name'), str(model.id), str('model_version'), str(version)]),
      outputPart: Buffer.concat([str('outputs'), Buffer.from([0x91, 0x84]), str('name'), str(model.output.name), str('datatype'), str('FP32'), str('shape')]),
    }
    byVersion.set(version, h)
  }
  return h
}

/**
 * A MessagePack length or unsigned-integer header: the one-byte fix form
 * below `fixMax` (`fixTag | v`), else the tag of the 8-, 16- or 32-bit form
 * and the value big-endian (`tag8` -1: the type has no 8-bit form).
 */
interface HeaderForm { readonly fixMax: number, readonly fixTag: number, readonly tag8: number, readonly tag16: number, readonly tag32: number }
const STR: HeaderForm = { fixMax: 32, fixTag: 0xa0, tag8: 0xd9, tag16: 0xda, tag32: 0xdb }
const UINT: HeaderForm = { fixMax: 0x80, fixTag: 0, tag8: 0xcc, tag16: 0xcd, tag32: 0xce }
const ARRAY: HeaderForm = { fixMax: 16, fixTag: 0x90, tag8: -1, tag16: 0xdc, tag32: 0xdd }

const F32 = new Float32Array(1)
const F32_BYTES = new Uint8Array(F32.buffer)
const ID_KEY = str('id')
const DATA_KEY = str('data')

function str (s: string): Buffer {
  const bytes = Buffer.byteLength(s)
  const b = Buffer.allocUnsafe(headerSize(STR, bytes) + bytes)
  b.write(s, writeHeader(b, 0, STR, bytes), 'utf8')
  return b
}

function headerSize (f: HeaderForm, v: number): number {
  return v < f.fixMax ? 1 : f.tag8 >= 0 && v < 0x100 ? 2 : v < 0x10000 ? 3 : 5
}

function writeHeader (b: Buffer, o: number, f: HeaderForm, v: number): number {
  if (v < f.fixMax) { b[o] = f.fixTag | v; return o + 1 }
  if (f.tag8 >= 0 && v < 0x100) { b[o] = f.tag8; b[o + 1] = v; return o + 2 }
  if (v < 0x10000) { b[o] = f.tag16; b.writeUInt16BE(v, o + 1); return o + 3 }
  b[o] = f.tag32
  b.writeUInt32BE(v, o + 1)
  return o + 5
}

export function modelMetadata (model: ModelConfig, version: string): Obj {
  return {
    name: model.id,
    versions: [version],
    platform: 'onnxruntime_onnx',
    inputs: [{ name: model.input.name, datatype: model.input.datatype, shape: model.input.shape }],
    outputs: [{ name: model.output.name, datatype: model.output.datatype, shape: model.output.shape }],
  }
}
