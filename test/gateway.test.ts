// End-to-end over real sockets: OIP routes, tenant routing to versions,
// JSON and MessagePack, and every bad input the gateway must refuse cleanly.

import t, { type Test } from 'tap'
import { Packr } from 'msgpackr'
import { call, inferBody, KEYS, start } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'

const { server, url } = await start()
t.teardown(() => server.close())

function close (t: Test, got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  t.equal(got.length, want.length, `${what}: element count`)
  let worst = 0
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)) / (1e-4 + Math.abs(want[i] as number)))
  t.ok(worst < 1e-3, `${what}: every element within tolerance of the reference (worst relative error ${worst.toExponential(2)})`)
}

t.test('health and server metadata need no key', async (t) => {
  t.same((await call(url, '/v2/health/live')).json, { live: true })
  const ready = await call(url, '/v2/health/ready')
  t.equal(ready.status, 200)
  t.same(ready.json, { ready: true })
  const meta = await call(url, '/v2')
  t.equal(meta.json.name, 'fairway')
})

t.test('model metadata shows the version the registry selects for the tenant', async (t) => {
  const a = await call(url, '/v2/models/tiny-classifier', { key: KEYS.acme })
  t.equal(a.status, 200)
  t.same(a.json.versions, ['1'])
  t.same(a.json.inputs, [{ name: 'input', datatype: 'FP32', shape: [-1, 64] }])
  const u = await call(url, '/v2/models/tiny-classifier', { key: KEYS.umbrella })
  t.same(u.json.versions, ['2'])
  const r = await call(url, '/v2/models/tiny-classifier/versions/1/ready', { key: KEYS.acme })
  t.equal(r.status, 200)
  t.equal(r.json.ready, true)
})

t.test('inference matches an independent reference, per tenant version', async (t) => {
  const x = sampleInput(64, 3, 42)
  const a = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.acme, body: inferBody('input', 3, 64, x, { id: 'req-1' }) })
  t.equal(a.status, 200)
  t.equal(a.json.model_name, 'tiny-classifier')
  t.equal(a.json.model_version, '1')
  t.equal(a.json.id, 'req-1')
  t.same(a.json.outputs[0].shape, [3, 8])
  close(t, a.json.outputs[0].data, referenceForward(specFor('tiny-classifier', '1'), x, 3), 'acme v1')

  const u = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.umbrella, body: inferBody('input', 3, 64, x) })
  t.equal(u.json.model_version, '2')
  close(t, u.json.outputs[0].data, referenceForward(specFor('tiny-classifier', '2'), x, 3), 'umbrella v2')

  const fx = sampleInput(256, 2, 7)
  const r = await call(url, '/v2/models/ranker/versions/1/infer', { key: KEYS.globex, body: inferBody('features', 2, 256, fx) })
  t.equal(r.status, 200)
  close(t, r.json.outputs[0].data, referenceForward(specFor('ranker', '1'), fx, 2), 'ranker')

  const hx = sampleInput(128, 1, 9)
  const h = await call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.wayne, body: inferBody('input', 1, 128, hx) })
  t.equal(h.status, 200)
  close(t, h.json.outputs[0].data, referenceForward(specFor('heavy-encoder', '1'), hx, 1), 'heavy-encoder on the dedicated pool')
})

t.test('nested data arrays are accepted as row-major', async (t) => {
  const x = sampleInput(64, 2, 5)
  const nested = [Array.from(x.subarray(0, 64)), Array.from(x.subarray(64))]
  const res = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.initech, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 64], data: nested }] } })
  t.equal(res.status, 200)
  close(t, res.json.outputs[0].data, referenceForward(specFor('tiny-classifier', '1'), x, 2), 'nested')
})

t.test('MessagePack in, MessagePack out, same shape as JSON', async (t) => {
  const packr = new Packr({ useRecords: false })
  const x = sampleInput(64, 2, 11)
  const body = packr.pack({ id: 'mp', inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 64], data: Array.from(x) }] })
  const res = await fetch(`${url}/v2/models/tiny-classifier/infer`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.acme}`, 'content-type': 'application/msgpack' }, body })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'application/msgpack')
  const out = packr.unpack(Buffer.from(await res.arrayBuffer())) as any
  t.equal(out.id, 'mp')
  t.same(out.outputs[0].shape, [2, 8])
  close(t, out.outputs[0].data, referenceForward(specFor('tiny-classifier', '1'), x, 2), 'msgpack')

  const bad = await fetch(`${url}/v2/models/tiny-classifier/infer`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.acme}`, 'content-type': 'application/msgpack' }, body: Buffer.from([0xc1, 0xc1, 0xc1]) })
  t.equal(bad.status, 400)
  t.equal(bad.headers.get('x-fairway-error-code'), 'FW_ERR_BODY_MALFORMED')
  const err = packr.unpack(Buffer.from(await bad.arrayBuffer())) as any
  t.equal(err.code, 'FW_ERR_BODY_MALFORMED')
  t.match(err.error, /MessagePack/)
})

t.test('bad input gets the right status and a stable code', async (t) => {
  const good = inferBody('input', 1, 64, sampleInput(64, 1, 1))
  const path = '/v2/models/tiny-classifier/infer'
  const cases: Array<[string, Parameters<typeof call>[2] & { path?: string }, number, string]> = [
    ['malformed JSON', { key: KEYS.acme, raw: '{"inputs": [', headers: { 'content-type': 'application/json' } }, 400, 'FW_ERR_BODY_MALFORMED'],
    ['body not an object', { key: KEYS.acme, body: [1, 2] }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['no inputs', { key: KEYS.acme, body: { inputs: [] } }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['wrong input name', { key: KEYS.acme, body: inferBody('x', 1, 64, sampleInput(64, 1, 1)) }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['wrong datatype', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'INT64', shape: [1, 64], data: new Array(64).fill(1) }] } }, 400, 'FW_ERR_INFER_DATATYPE'],
    ['wrong shape', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 63], data: new Array(63).fill(1) }] } }, 400, 'FW_ERR_INFER_SHAPE'],
    ['3-d shape', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 1, 64], data: new Array(64).fill(1) }] } }, 400, 'FW_ERR_INFER_SHAPE'],
    ['too few elements', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 64], data: new Array(64).fill(1) }] } }, 400, 'FW_ERR_INFER_ELEMENT_COUNT'],
    ['too many elements', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data: new Array(65).fill(1) }] } }, 400, 'FW_ERR_INFER_ELEMENT_COUNT'],
    ['non-numeric element', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data: [...new Array(63).fill(1), 'x'] }] } }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['element beyond float32 range', { key: KEYS.acme, body: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data: [...new Array(63).fill(1), 1e39] }] } }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['data nested 20,000 deep', { key: KEYS.acme, raw: `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[${'1,'.repeat(63)}${'['.repeat(20_000)}1${']'.repeat(20_000)}]}]}`, headers: { 'content-type': 'application/json' } }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['valid input the model overflows on', { key: KEYS.acme, body: inferBody('input', 1, 64, new Array(64).fill(3e38)) }, 422, 'FW_ERR_INFER_OUTPUT_NOT_FINITE'],
    ['too many rows', { key: KEYS.acme, body: inferBody('input', 33, 64, new Array(33 * 64).fill(0)) }, 400, 'FW_ERR_INFER_BATCH_TOO_LARGE'],
    ['bad timeout header', { key: KEYS.acme, body: good, headers: { 'x-request-timeout-ms': 'soon' } }, 400, 'FW_ERR_INFER_INPUT_INVALID'],
    ['unknown model', { key: KEYS.acme, body: good, path: '/v2/models/nope/infer' }, 404, 'FW_ERR_MODEL_NOT_FOUND'],
    ['unknown version', { key: KEYS.acme, body: good, path: '/v2/models/tiny-classifier/versions/9/infer' }, 404, 'FW_ERR_MODEL_VERSION_NOT_FOUND'],
    ['version not selected for tenant', { key: KEYS.acme, body: good, path: '/v2/models/tiny-classifier/versions/2/infer' }, 403, 'FW_ERR_MODEL_VERSION_FORBIDDEN'],
    ['model not allowed for tenant', { key: KEYS.initech, body: inferBody('features', 1, 256, new Array(256).fill(0)), path: '/v2/models/ranker/infer' }, 403, 'FW_ERR_MODEL_FORBIDDEN'],
    ['metadata of a model not allowed', { key: KEYS.initech, path: '/v2/models/heavy-encoder', method: 'GET' }, 403, 'FW_ERR_MODEL_FORBIDDEN'],
    ['missing key', { body: good }, 401, 'FW_ERR_AUTH_MISSING'],
    ['wrong key', { key: 'fw_not_a_key', body: good }, 401, 'FW_ERR_AUTH_INVALID'],
    ['metadata without key', { path: '/v2/models/tiny-classifier', method: 'GET' }, 401, 'FW_ERR_AUTH_MISSING'],
    ['unsupported content type', { key: KEYS.acme, raw: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'FW_ERR_BODY_MEDIA_TYPE'],
    ['content type with a suffix', { key: KEYS.acme, raw: JSON.stringify(good), headers: { 'content-type': 'application/jsonx' } }, 415, 'FW_ERR_BODY_MEDIA_TYPE'],
    ['body over the size limit', { key: KEYS.acme, raw: 'x'.repeat(4 * 1024 * 1024 + 1), headers: { 'content-type': 'application/json' } }, 413, 'FW_ERR_BODY_TOO_LARGE'],
    ['unknown route', { path: '/v3/whatever', method: 'GET' }, 404, 'FW_ERR_ROUTE_NOT_FOUND'],
    ['wrong method', { path: '/v2/health/live', method: 'DELETE' }, 405, 'FW_ERR_METHOD_NOT_ALLOWED'],
    ['GET on infer', { key: KEYS.acme, path: path, method: 'GET' }, 405, 'FW_ERR_METHOD_NOT_ALLOWED'],
    ['POST on metrics', { path: '/metrics', method: 'POST', raw: '' }, 405, 'FW_ERR_METHOD_NOT_ALLOWED'],
    ['plain GET on the WebSocket route', { path: '/v2/ws', method: 'GET' }, 426, 'FW_ERR_WS_UPGRADE_REQUIRED'],
    ['GET on the SQL endpoint', { path: '/v2/admin/sql', method: 'GET' }, 405, 'FW_ERR_METHOD_NOT_ALLOWED'],
  ]
  for (const [name, opts, status, code] of cases) {
    const res = await call(url, opts.path ?? path, opts)
    t.equal(res.status, status, `${name}: status ${status}`)
    t.equal(res.json?.code, code, `${name}: code ${code}`)
    t.equal(res.headers.get('x-fairway-error-code'), code, `${name}: code header`)
    t.type(res.json?.error, 'string', `${name}: OIP error body`)
  }
  // MessagePack requests get MessagePack error bodies.
  const mp = new Packr({ useRecords: false })
  const msgpackCases: Array<[string, Uint8Array, number, string]> = [
    ['64-bit integers in shape', mp.pack({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1n, 64n], data: new Array(64).fill(1) }] }), 400, 'FW_ERR_INFER_SHAPE'],
    ['the never-used byte 0xc1', Buffer.from([0xc1]), 400, 'FW_ERR_BODY_MALFORMED'],
    ['a Float32Array holding NaN', new Packr({ useRecords: false, moreTypes: true }).pack({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data: new Float32Array(64).fill(Number.NaN) }] }), 400, 'FW_ERR_INFER_INPUT_INVALID'],
  ]
  for (const [name, body, status, code] of msgpackCases) {
    const r = await fetch(url + path, { method: 'POST', headers: { authorization: `Bearer ${KEYS.acme}`, 'content-type': 'application/msgpack' }, body })
    const e = mp.unpack(Buffer.from(await r.arrayBuffer())) as { code?: string, error?: unknown }
    t.equal(r.status, status, `MessagePack, ${name}: status ${status}`)
    t.equal(e.code, code, `MessagePack, ${name}: code ${code}`)
    t.type(e.error, 'string', `MessagePack, ${name}: error message`)
  }
  // Media types are case-insensitive, parameters do not matter, and a body
  // without any content type is read as JSON.
  for (const type of ['Application/JSON', 'application/json; charset=utf-8', null]) {
    const r = await fetch(url + path, { method: 'POST', headers: { authorization: `Bearer ${KEYS.acme}`, ...(type === null ? {} : { 'content-type': type }) }, body: type === null ? new TextEncoder().encode(JSON.stringify(good)) : JSON.stringify(good) })
    t.equal(r.status, 200, `content-type ${String(type)} is JSON`)
    await r.arrayBuffer()
  }
  // The server is still healthy and no admission slot leaked.
  const ok = await call(url, path, { key: KEYS.acme, body: good })
  t.equal(ok.status, 200, 'still serving after every bad input')
  for (const tenant of server.registry.tenants) t.equal(server.admission.inflight(tenant.slot), 0, `${tenant.config.id}: no leaked in-flight slot`)
})
