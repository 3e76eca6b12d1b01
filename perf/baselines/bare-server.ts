// Baseline 1: the least a uWS-based inference server can do. uWebSockets.js
// (native addon, loaded like src/gateway/uws.ts does, never the JS fallback)
// plus one in-process onnxruntime session; POST /v2/models/<model>/infer
// parses the OIP v2 JSON body, runs the model on this thread and replies with
// the same JSON fairway writes. No tenancy, admission, queues or workers.
//
// With --refuse it answers every infer request 429 with an OIP error body
// once the body is read, and runs nothing: the least a refusal can cost on
// this stack, the floor bench:fairness puts next to fairway's refusals.
//
// Run: node dist/perf/baselines/bare-server.js [--port 0] [--host 127.0.0.1] [--refuse] [MODEL.onnx]
// Prints `bare-server listening on http://HOST:PORT`.

import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type * as Uws from '@trufflesuite/uws-js-unofficial'
import { BadRequest, baselineArgs, Model } from './common.js'

function loadNativeUws (): typeof Uws {
  const require = createRequire(import.meta.url)
  const pkgDir = dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'))
  const file = join(pkgDir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`)
  const mod = require(file) as typeof Uws
  if (typeof mod.App !== 'function' || !/\[native code\]/.test(Function.prototype.toString.call(mod.App))) {
    throw new Error(`${file} is not the native uWS addon`)
  }
  return mod
}

const opts = baselineArgs('bare-server')
const model = await Model.load(opts)
const uws = loadNativeUws()
const app = uws.App()

const REFUSAL = JSON.stringify({ error: 'refused (bare-server --refuse)', code: 'tenant_rate' })

function reply (res: Uws.HttpResponse, state: { aborted: boolean }, status: string, body: string): void {
  if (state.aborted) return
  state.aborted = true
  res.cork(() => { res.writeStatus(status).writeHeader('content-type', 'application/json').end(body) })
}

app.post('/v2/models/:model/infer', (res, req) => {
  const state = { aborted: false }
  res.onAborted(() => { state.aborted = true })
  if (req.getParameter(0) !== model.name) {
    reply(res, state, '404 Not Found', JSON.stringify({ error: `unknown model ${req.getParameter(0) ?? ''}` }))
    return
  }
  let chunks: Buffer[] | null = null
  res.onData((chunk, isLast) => {
    // uWS chunks are only valid during the callback: copy.
    const copy = Buffer.from(new Uint8Array(chunk).slice())
    if (!isLast) { (chunks ??= []).push(copy); return }
    if (opts.refuse) { reply(res, state, '429 Too Many Requests', REFUSAL); return }
    const body = chunks === null ? copy : Buffer.concat([...chunks, copy])
    model.infer(body).then(
      (text) => { reply(res, state, '200 OK', text) },
      (err: unknown) => {
        const bad = err instanceof BadRequest
        reply(res, state, bad ? '400 Bad Request' : '500 Internal Server Error', JSON.stringify({ error: bad ? err.message : 'internal error' }))
      },
    )
  })
})
app.get('/v2/health/live', (res) => { res.writeHeader('content-type', 'application/json').end('{"live":true}') })
app.any('/*', (res) => { res.writeStatus('404 Not Found').end('{"error":"not found"}') })

const listenSocket = await new Promise<Uws.us_listen_socket | false>((resolve) => { app.listen(opts.host, opts.port, (s) => { resolve(s) }) })
if (listenSocket === false) throw new Error(`bare-server: cannot listen on ${opts.host}:${opts.port}`)
console.log(`bare-server listening on http://${opts.host}:${uws.us_socket_local_port(listenSocket)}`)
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { uws.us_listen_socket_close(listenSocket); process.exit(0) })
