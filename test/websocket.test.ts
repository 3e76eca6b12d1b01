// WebSocket API on a real socket: auth on upgrade, MessagePack and JSON
// frames, many requests in flight answered by id, per-message errors with the
// HTTP codes, and a client that stops reading cannot grow server memory.

import t from 'tap'
import WebSocket from 'ws'
import { Packr } from 'msgpackr'
import { demoRaw, KEYS, start } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'

const { server, url } = await start()
t.teardown(() => server.close())
const wsUrl = url.replace('http', 'ws') + '/v2/ws'
const packr = new Packr({ useRecords: false })

function connect (key?: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, key === undefined ? {} : { headers: { authorization: `Bearer ${key}` } })
    ws.once('open', () => { resolve(ws) })
    ws.once('unexpected-response', (_req, res) => { reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, code: res.headers['x-fairway-error-code'] })) })
    ws.once('error', reject)
  })
}

function collect (ws: WebSocket, n: number, binary: boolean): Promise<Array<Record<string, any>>> {
  return new Promise((resolve) => {
    const out: Array<Record<string, any>> = []
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      out.push(isBinary ? packr.unpack(data) : JSON.parse(data.toString()))
      if (out.length === n) resolve(out)
    })
    if (binary) { /* both frame types are decoded above */ }
  })
}

const req = (id: string, rows: number, seed: number, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  id, model: 'tiny-classifier', inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 64], data: Array.from(sampleInput(64, rows, seed)) }], ...extra,
})

t.test('upgrade needs a valid key', async (t) => {
  await t.rejects(connect(), { status: 401, code: 'FW_ERR_AUTH_MISSING' })
  await t.rejects(connect('nope'), { status: 401, code: 'FW_ERR_AUTH_INVALID' })
})

t.test('many requests in flight, MessagePack frames, answered by id with correct outputs', async (t) => {
  const ws = await connect(KEYS.acme)
  t.teardown(() => ws.close())
  const n = 50
  const replies = collect(ws, n, true)
  for (let i = 0; i < n; i++) ws.send(packr.pack(req(`r${i}`, 1 + (i % 3), i)))
  const got = await replies
  t.same(new Set(got.map((r) => r.id)), new Set(Array.from({ length: n }, (_, i) => `r${i}`)), 'every id answered once')
  const spec = specFor('tiny-classifier', '1')
  let worst = 0
  for (const r of got) {
    const i = Number(String(r.id).slice(1))
    const rows = 1 + (i % 3)
    const want = referenceForward(spec, sampleInput(64, rows, i), rows)
    const data: number[] = r.outputs[0].data
    t.equal(data.length, want.length)
    for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs((data[k] as number) - (want[k] as number)))
  }
  t.ok(worst < 1e-5, `all outputs match the reference (max abs error ${worst.toExponential(2)})`)
})

t.test('JSON text frames and per-message errors with the HTTP codes', async (t) => {
  const ws = await connect(KEYS.initech)
  t.teardown(() => ws.close())
  const replies = collect(ws, 6, false)
  ws.send(JSON.stringify(req('ok', 1, 1)))
  ws.send('{not json')
  ws.send(JSON.stringify({ model: 'tiny-classifier', inputs: [] }))
  ws.send(JSON.stringify({ ...req('forbidden', 1, 1), model: 'ranker' }))
  ws.send(JSON.stringify({ ...req('shape', 1, 1), inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] }))
  ws.send(JSON.stringify({ ...req('dtype', 1, 1), inputs: [{ name: 'input', datatype: 'INT8', shape: [1, 64], data: new Array(64).fill(1) }] }))
  const got = await replies
  const byId = new Map(got.map((r) => [String(r.id), r]))
  t.equal(byId.get('ok')?.model_version, '1')
  t.equal(byId.get('forbidden')?.code, 'FW_ERR_MODEL_FORBIDDEN')
  t.equal(byId.get('forbidden')?.status, 403)
  t.equal(byId.get('shape')?.code, 'FW_ERR_INFER_SHAPE')
  t.equal(byId.get('dtype')?.code, 'FW_ERR_INFER_DATATYPE')
  const anonymous = got.filter((r) => r.id === null).map((r) => r.code).sort()
  t.same(anonymous, ['FW_ERR_BODY_MALFORMED', 'FW_ERR_INFER_INPUT_INVALID'], 'errors without a readable id come back with id null')
  t.equal(ws.readyState, WebSocket.OPEN, 'bad messages do not close the connection')
})

t.test('a connection holds at most 256 requests in flight; the rest are refused per message', async (t) => {
  // Its own server, with tenant limits above the per-connection cap so the
  // connection cap is what binds.
  const raw = demoRaw()
  Object.assign(raw.tenants.acme.limits, { concurrency: 100000, queueDepth: 100000, ratePerSecond: 0, timeoutMs: 60000 })
  raw.serviceClasses.heavy.maxQueued = 100000
  // The deadline is raised too: ~32 queued 8-row batches on heavy's one niced
  // worker took over the demo's 2 s on a loaded CI machine, and a message
  // that times out is neither served nor refused.
  const own = await start(raw)
  t.teardown(() => own.server.close())
  const ws = await new Promise<WebSocket>((resolve, reject) => {
    const s = new WebSocket(own.url.replace('http', 'ws') + '/v2/ws', { headers: { authorization: `Bearer ${KEYS.acme}` } })
    s.once('open', () => { resolve(s) })
    s.once('error', reject)
  })
  t.teardown(() => ws.close())
  const acme = own.server.registry.tenantById('acme')?.slot ?? -1
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, own.server.admission.inflight(acme)) }, 1)
  const n = 600
  const replies = collect(ws, n, true)
  const data = Array.from(sampleInput(128, 1, 5))
  for (let i = 0; i < n; i++) ws.send(packr.pack({ id: `m${i}`, model: 'heavy-encoder', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 128], data }] }))
  const got = await replies
  clearInterval(sampler)
  const refused = got.filter((r) => r.code === 'FW_ERR_WS_TOO_MANY_INFLIGHT')
  const refusedCount = refused.length
  const served = got.filter((r) => r.outputs !== undefined).length
  t.equal(served + refusedCount, n, 'every message answered: served or refused')
  t.ok(refusedCount > 0, `${refusedCount} refused with FW_ERR_WS_TOO_MANY_INFLIGHT`)
  t.equal(new Set(got.map((r) => r.id)).size, n, 'each refusal carries its own message\'s id: every id answered once')
  t.ok(peak <= 256, `in flight peaked at ${peak} (cap 256)`)
  t.equal(own.server.admission.inflight(acme), 0, 'in flight back to 0')
})
