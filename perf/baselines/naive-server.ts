// Baseline 2: the same as bare-server.ts with Node's own http module instead
// of uWS: what a straightforward Node inference service costs.
//
// Run: node dist/perf/baselines/naive-server.js [--port 0] [--host 127.0.0.1] [MODEL.onnx]
// Prints `naive-server listening on http://HOST:PORT`.

import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { BadRequest, baselineArgs, Model } from './common.js'

const opts = baselineArgs('naive-server')
const model = await Model.load(opts)
const INFER = /^\/v2\/models\/([^/]+)\/infer$/

function reply (res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

const server = createServer((req, res) => {
  const m = INFER.exec(req.url ?? '')
  if (req.method === 'GET' && req.url === '/v2/health/live') { reply(res, 200, '{"live":true}'); return }
  if (req.method !== 'POST' || m === null) { reply(res, 404, '{"error":"not found"}'); req.resume(); return }
  if (m[1] !== model.name) { reply(res, 404, JSON.stringify({ error: `unknown model ${m[1] ?? ''}` })); req.resume(); return }
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => { chunks.push(c) })
  req.on('end', () => {
    model.infer(chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks)).then(
      (text) => { reply(res, 200, text) },
      (err: unknown) => {
        const bad = err instanceof BadRequest
        reply(res, bad ? 400 : 500, JSON.stringify({ error: bad ? err.message : 'internal error' }))
      },
    )
  })
})
server.keepAliveTimeout = 60_000
await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(opts.port, opts.host, resolve) })
console.log(`naive-server listening on http://${opts.host}:${(server.address() as AddressInfo).port}`)
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { server.close(); process.exit(0) })
