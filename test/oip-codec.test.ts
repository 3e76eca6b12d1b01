// The gateway's own MessagePack codec against msgpackr, the reference it
// stands in for: the response encoder must decode to the object msgpackr
// would have packed, and the request decoder must mean exactly what
// msgpackr's decode means (its one difference, an input's "data" as a
// Float32Array, is checked against Math.fround of msgpackr's numbers), on
// valid requests and on random mutations of them. Loops record their first
// mismatch and assert once, so a failure names its case.

import t from 'tap'
import { Packr } from 'msgpackr'
import type { ModelConfig } from '../src/control-plane/config-types.js'
import { decodeMsgpack, messageHead, msgpackResponse, peekMessageHead } from '../src/gateway/oip-codec.js'
import { mulberry32 } from '../scripts/model-specs.js'

const ref = new Packr({ useRecords: false, useFloat32: 1 })
const model = { id: 'tiny-classifier', output: { name: 'probs', datatype: 'FP32', shape: [-1, 8] } } as unknown as ModelConfig

/**
 * A decoded request with each input's flat, all-finite-number data as a
 * Float32Array when every value is finite in float32: the form both
 * decoders' results take in parseInferRequest.
 * (The fast decoder returns that form itself; msgpackr, and the fast decoder
 * when it hands over to msgpackr, return the numbers.)
 */
function normal (v: unknown): unknown {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const inputs = (v as Record<string, unknown>).inputs
    if (Array.isArray(inputs)) {
      for (const inp of inputs) {
        if (inp === null || typeof inp !== 'object' || Array.isArray(inp)) continue
        const d = (inp as Record<string, unknown>).data
        if (Array.isArray(d) && d.every((x) => typeof x === 'number' && Number.isFinite(Math.fround(x)))) (inp as Record<string, unknown>).data = Float32Array.from(d as number[])
      }
    }
  }
  return v
}

const expected = (buf: Buffer): unknown => normal(ref.unpack(buf))

/** Structural equality that tells a Float32Array from an array and compares numbers bit for bit (NaN equal to NaN, 0 not equal to -0). */
function same (a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b)
  if (a instanceof Float32Array || b instanceof Float32Array) {
    return a instanceof Float32Array && b instanceof Float32Array && a.length === b.length && a.every((x, i) => Object.is(x, b[i]))
  }
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]))
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a)
    const kb = Object.keys(b)
    return Object.getPrototypeOf(a) === Object.getPrototypeOf(b) && ka.length === kb.length &&
      ka.every((k, i) => k === kb[i] && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  }
  return Object.is(a, b)
}

/** What both decoders do with `buf`: a value, or the fact that it is refused. */
function outcome (f: () => unknown): { ok: true, v: unknown } | { ok: false } {
  try { return { ok: true, v: f() } } catch { return { ok: false } }
}

t.test('response encoder: decodes to what msgpackr packs from the response object', async (t) => {
  const cases: Array<[number, number, string | undefined]> = [[1, 8, 'req-1'], [3, 8, undefined], [200, 8, 'é'.repeat(40)], [9000, 8, 'a'.repeat(70_000)], [1, 300, ''], [0, 8, 'x']]
  let bad = ''
  for (const [rows, cols, id] of cases) {
    const m = { ...model, output: { ...model.output, shape: [-1, cols] } } as unknown as ModelConfig
    const out = Float32Array.from({ length: rows * cols }, (_, i) => i % 7 === 0 ? i : Math.sin(i) * 1e3)
    const obj = { model_name: m.id, model_version: '17', ...(id === undefined ? {} : { id }), outputs: [{ name: 'probs', datatype: 'FP32', shape: [rows, cols], data: Array.from(out) }] }
    const got = ref.unpack(msgpackResponse(m, '17', id, rows, out))
    if (bad === '' && !same(got, ref.unpack(ref.pack(obj)))) bad = `rows ${rows} cols ${cols} id length ${id?.length ?? 'none'}`
  }
  t.equal(bad, '', 'every case decodes to the reference object')
})

function request (r: () => number, rows: number, dim: number): Record<string, unknown> {
  const data = Array.from({ length: rows * dim }, (_, i) => i % 5 === 0 ? Math.round(r() * 300 - 150) : (r() - 0.5) * 10 ** Math.floor(r() * 77 - 40))
  const body: Record<string, unknown> = { id: `req-${Math.floor(r() * 1e9)}`, model: 'tiny-classifier', inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, dim], data }] }
  if (r() < 0.3) body.parameters = { timeout_ms: Math.floor(r() * 1000), flag: r() < 0.5, nothing: null }
  if (r() < 0.2) body.outputs = [{ name: 'probs' }]
  return body
}

t.test('request decoder: valid requests mean what msgpackr decodes, data as float32', async (t) => {
  const r = mulberry32(11)
  const packers = [ref, new Packr({ useRecords: false }), new Packr({ useRecords: false, useFloat32: 1, variableMapSize: true })]
  let bad = ''
  let fast = 0
  for (let i = 0; i < 600 && bad === ''; i++) {
    const body = request(r, 1 + Math.floor(r() * (i % 10 === 0 ? 3000 : 4)), 64)
    const buf = (packers[i % packers.length] as Packr).pack(body)
    const got = decodeMsgpack(buf) as Record<string, unknown>
    if (!same(got, expected(buf))) bad = `case ${i}`
    const inputs = got.inputs as Array<Record<string, unknown>>
    if (inputs[0]?.data instanceof Float32Array) fast++
  }
  t.equal(bad, '', 'every request decodes to the reference')
  t.equal(fast, 600, 'and every one took the Float32Array path')
  // Data that is not a flat array of finite numbers stays a plain array, for
  // the validator to refuse with its usual message.
  for (const data of [[1, Number.NaN], [[1, 2], [3, 4]], [1, 'x'], [Infinity], [1, 1e39]]) {
    const buf = ref.pack({ inputs: [{ name: 'input', data }] })
    t.ok(same(decodeMsgpack(buf), ref.unpack(buf)), `data ${JSON.stringify(data)} stays msgpackr's plain array`)
  }
})

t.test('request decoder: mutated and truncated bytes get msgpackr\'s answer, value or refusal', async (t) => {
  const r = mulberry32(23)
  let bad = ''
  let refused = 0
  for (let i = 0; i < 4000 && bad === ''; i++) {
    const buf = Buffer.from(ref.pack(request(r, 1 + Math.floor(r() * 3), 4)))
    const edits = 1 + Math.floor(r() * 3)
    let b = buf
    for (let e = 0; e < edits; e++) {
      const k = Math.floor(r() * 4)
      if (k === 0) b = b.subarray(0, Math.floor(r() * b.length))
      else if (k === 1) b = Buffer.concat([b, Buffer.from([Math.floor(r() * 256)])])
      else b[Math.floor(r() * b.length)] = Math.floor(r() * 256)
    }
    const want = outcome(() => expected(b))
    const got = outcome(() => normal(decodeMsgpack(b)))
    if (!want.ok) refused++
    if (want.ok !== got.ok || (want.ok && got.ok && !same(got.v, want.v))) bad = `case ${i}: ${b.toString('hex')}`
  }
  t.equal(bad, '', 'no mutation decodes differently')
  t.ok(refused > 100, `mutations that msgpackr refuses were tried too (${refused})`)
})

t.test('request decoder: what it declines goes to msgpackr', async (t) => {
  const proto = Buffer.from([0x81, 0xa9, ...Buffer.from('__proto__'), 0x01])
  t.same(decodeMsgpack(proto), { __proto_: 1 }, '__proto__ gets msgpackr\'s renaming, not a prototype')
  t.equal(Object.getPrototypeOf(decodeMsgpack(proto)), Object.prototype)
  t.same(decodeMsgpack(Buffer.from([0x81, 0x01, 0x02])), { 1: 2 }, 'a non-string key')
  t.same(decodeMsgpack(ref.pack({ id: 'é', data: new Uint8Array([1, 2]) })), ref.unpack(ref.pack({ id: 'é', data: new Uint8Array([1, 2]) })), 'UTF-8 strings and bin')
  t.throws(() => decodeMsgpack(Buffer.concat([ref.pack(1), ref.pack(2)])), 'trailing bytes are refused, as msgpackr refuses them')
  t.throws(() => decodeMsgpack(Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])), 'an array longer than the message is refused without allocating it')
  t.throws(() => decodeMsgpack(Buffer.from([0xc1])), 'the never-used byte is refused, not msgpackr\'s marker object')
  const deep = Buffer.concat([Buffer.alloc(100, 0x91), Buffer.from([0x01])])
  t.same(decodeMsgpack(deep), ref.unpack(deep), 'nesting past the fast decoder\'s depth goes to msgpackr')
})

t.test('message head: the id, model and version msgpackr reads, without decoding the rest', async (t) => {
  const r = mulberry32(31)
  const str = (v: unknown): string | null => typeof v === 'string' ? v : null
  let bad = ''
  let peeked = 0
  for (let i = 0; i < 3000 && bad === ''; i++) {
    const body = request(r, 1 + Math.floor(r() * 3), 8)
    if (r() < 0.3) body.version = String(Math.floor(r() * 9))
    if (r() < 0.2) body.extra = { bin: new Uint8Array(Math.floor(r() * 300)), big: 2n ** 60n, list: [1, 'a', null, [true]] }
    let b = Buffer.from(ref.pack(body))
    if (i % 2 === 1) b[Math.floor(r() * b.length)] = Math.floor(r() * 256) // every other one mutated
    const head = peekMessageHead(b)
    const want = outcome(() => ref.unpack(b) as unknown)
    if (i % 2 === 0 && head === null) { bad = `case ${i}: a valid message has no head`; break }
    if (!want.ok || want.v === null || typeof want.v !== 'object' || Array.isArray(want.v)) continue
    const m = want.v as Record<string, unknown>
    const same3 = (h: { id: string | null, model: string | null, version: string | null } | null): boolean => h !== null && h.id === str(m.id) && h.model === str(m.model) && h.version === str(m.version)
    // messageHead (peek, else a full decode) must always agree; the peek alone when it answers.
    if (!same3(messageHead(b))) { bad = `case ${i}: messageHead ${JSON.stringify(messageHead(b))} against ${JSON.stringify([m.id, m.model, m.version])}`; break }
    if (head === null) continue
    peeked++
    if (!same3(head)) bad = `case ${i}: ${JSON.stringify(head)} against ${JSON.stringify([m.id, m.model, m.version])}`
  }
  t.equal(bad, '', 'every head read agrees with msgpackr')
  t.ok(peeked > 1500, `${peeked} heads compared`)
  t.equal(peekMessageHead(Buffer.from([0x92, 0x01, 0x02])), null, 'not a map: no head')
  const cafe = Buffer.from(ref.pack({ id: 'café', model: 'm', inputs: [] }))
  t.equal(peekMessageHead(cafe), null, 'the peek declines non-ASCII')
  t.same(messageHead(cafe), { id: 'café', model: 'm', version: null }, 'and messageHead decodes it in full')
  const twice = Buffer.concat([Buffer.from([0x83]), ref.pack('id'), ref.pack('a'), ref.pack('model'), ref.pack('m'), ref.pack('id'), ref.pack(5)])
  t.same(peekMessageHead(twice), { id: null, model: 'm', version: null }, 'a repeated key: the last one wins, as in a full decode')
  t.equal(peekMessageHead(Buffer.from(ref.pack({ id: 'x', inputs: [1, 2, 3] })).subarray(0, 8)), null, 'cut short: no head')
})
