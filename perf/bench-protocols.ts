// Protocol benchmark (issue #5): the same small-model batch-1 requests over
// HTTP + JSON, HTTP + MessagePack and WebSocket + MessagePack against one
// fairway (dynamic batching on, cost events on), plus a WebSocket client that
// stops reading. The bare and naive baselines of perf/overhead.ts are
// measured first over HTTP + JSON the same way, for like-for-like ratios;
// then a second fairway whose light class runs inline on the gateway thread.
//
// For each protocol:
//   saturation  closed loop with a fixed number of requests outstanding
//               (HTTP: 128 keep-alive connections, one request each; WS: 4
//               connections x 64 in flight); requests answered per second.
//   CPU/request at a fixed 3,000 req/s for 8 s: the server process's
//               utime+stime (/proc/<pid>/stat, all threads) / answered
//               requests; the generator's own CPU is not included.
// Slow reader: one WS connection sends 20,000 requests and never reads;
// the server's RSS is sampled for 10 s.
//
// Run: npm run bench:protocols

import { execSync } from 'node:child_process'
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Packr } from 'msgpackr'
import { Pool } from 'undici'
import WebSocket from 'ws'
import { machine, platform, ROOT, startBaseline, startFairway, stop, type Server } from './bench-platform.js'
import { parseCli } from './cli-args.js'
import { readCpuTicks, stealPct } from './cpu-steal.js'

parseCli('usage: node dist/perf/bench-protocols.js   (npm run bench:protocols; no options; appends to perf/RESULTS.md)\n  --help  this text', {})

const KEY = 'fw_bench_big'
const CLK_TCK = Number(execSync('getconf CLK_TCK').toString().trim()) || 100
const packr = new Packr({ useRecords: false })
const input = Array.from({ length: 64 }, (_, i) => Math.sin(i))
const body = { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data: input }] }
const jsonBody = JSON.stringify(body)
const msgpackBody = packr.pack(body)

function cpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * 1000 / CLK_TCK
}

function rssMb (pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? NaN) / 1024
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** A transport that sends one inference request and resolves when it is answered. */
interface Client { send (): Promise<void>, close (): Promise<void> }

function httpClient (url: string, encoding: 'json' | 'msgpack', connections: number): Client {
  const pool = new Pool(url, { connections, pipelining: 1 })
  const headers = { authorization: `Bearer ${KEY}`, 'content-type': encoding === 'json' ? 'application/json' : 'application/msgpack' }
  return {
    async send () {
      const r = await pool.request({ path: '/v2/models/tiny-classifier/infer', method: 'POST', headers, body: encoding === 'json' ? jsonBody : msgpackBody })
      await r.body.arrayBuffer()
      if (r.statusCode !== 200) throw new Error(`HTTP ${r.statusCode}`)
    },
    async close () { await pool.close() },
  }
}

async function wsClient (url: string, connections: number): Promise<Client> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(url.replace('http', 'ws') + '/v2/ws', { headers: { authorization: `Bearer ${KEY}` } })
    ws.once('open', () => { resolve(ws) })
    ws.once('error', reject)
  })))
  const waiting = new Map<string, () => void>()
  for (const ws of sockets) {
    ws.on('message', (d: Buffer) => {
      const m = packr.unpack(d) as { id: string, outputs?: unknown }
      const done = waiting.get(m.id)
      waiting.delete(m.id)
      done?.()
    })
  }
  let n = 0
  return {
    send () {
      const id = String(n++)
      const ws = sockets[n % sockets.length] as WebSocket
      return new Promise<void>((resolve) => {
        waiting.set(id, resolve)
        ws.send(packr.pack({ id, model: 'tiny-classifier', ...body }))
      })
    },
    async close () { for (const ws of sockets) ws.close() },
  }
}

/** Closed loop: `outstanding` requests always in flight for `seconds`; answered per second and server CPU µs per request. */
async function saturation (server: Server, client: Client, outstanding: number, seconds: number): Promise<{ rps: number, cpuUs: number, stealPct: number | null }> {
  const pid = server.proc.pid as number
  let answered = 0
  const c0 = cpuMs(pid)
  const s0 = readCpuTicks()
  const until = Date.now() + seconds * 1000
  await Promise.all(Array.from({ length: outstanding }, async () => {
    while (Date.now() < until) { await client.send(); answered++ }
  }))
  return { rps: answered / seconds, cpuUs: (cpuMs(pid) - c0) * 1000 / answered, stealPct: stealPct(s0, readCpuTicks()) }
}

/** Fixed rate (paced every ms): server CPU µs per answered request. */
async function cpuPerRequest (server: Server, client: Client, rate: number, seconds: number): Promise<number> {
  const pid = server.proc.pid as number
  const inflight: Array<Promise<void>> = []
  const c0 = cpuMs(pid)
  const t0 = Date.now()
  let sent = 0
  while (Date.now() - t0 < seconds * 1000) {
    const due = Math.floor((Date.now() - t0) * rate / 1000)
    for (; sent < due; sent++) inflight.push(client.send())
    await sleep(1)
  }
  await Promise.all(inflight)
  return (cpuMs(pid) - c0) * 1000 / sent
}

/** Saturation (after a 2 s warm-up) and CPU per request at a paced 3,000 req/s, then closes the client. */
async function measureProtocol (name: string, server: Server, client: Client, outstanding: number): Promise<Row> {
  await saturation(server, client, outstanding, 2) // warm-up
  const sat = await saturation(server, client, outstanding, 6)
  const cpuUs = await cpuPerRequest(server, client, 3000, 8)
  await client.close()
  console.error(`${name}: ${sat.rps.toFixed(0)} req/s (${sat.cpuUs.toFixed(1)} µs CPU/request), ${cpuUs.toFixed(1)} µs CPU/request at 3,000 req/s`)
  return { protocol: name, saturation: sat.rps, satCpuUs: sat.cpuUs, cpuUs, satStealPct: sat.stealPct }
}

/** satStealPct: hypervisor steal during the saturation run (perf/cpu-steal.ts), which lowers its throughput. */
interface Row { protocol: string, saturation: number, satCpuUs: number, cpuUs: number, satStealPct: number | null }

// The baselines of perf/overhead.ts over HTTP + JSON, measured the same way
// first, so fairway's protocols compare with them under like conditions.
const baselines: Row[] = []
for (const name of ['bare', 'naive'] as const) {
  const b = await startBaseline(name)
  try {
    baselines.push(await measureProtocol(`${name} server, HTTP + JSON`, b, httpClient(b.url, 'json', 128), 128))
  } finally {
    await stop(b)
  }
}

const configFile = join(ROOT, 'perf', 'out', 'protocols-platform.json')
mkdirSync(join(ROOT, 'perf', 'out'), { recursive: true })
writeFileSync(configFile, JSON.stringify(platform(undefined, true), null, 2))
const server = await startFairway(configFile)
const rows: Row[] = []
let slow: { rssBeforeMb: number, rssMaxMb: number, answeredAfterResume: number } | null = null
try {
  const protocols: Array<[string, () => Promise<Client>, number]> = [
    ['fairway, HTTP + JSON', async () => httpClient(server.url, 'json', 128), 128],
    ['fairway, HTTP + MessagePack', async () => httpClient(server.url, 'msgpack', 128), 128],
    ['fairway, WebSocket + MessagePack', async () => await wsClient(server.url, 4), 256],
  ]
  for (const [name, make, outstanding] of protocols) rows.push(await measureProtocol(name, server, await make(), outstanding))

  // A client that stops reading: uWS keeps its unsent output, fairway parks
  // then refuses its requests; server memory must stay bounded.
  const pid = server.proc.pid as number
  const ws = new WebSocket(server.url.replace('http', 'ws') + '/v2/ws', { headers: { authorization: `Bearer ${KEY}` } })
  await new Promise((resolve) => ws.once('open', resolve))
  const rssBeforeMb = rssMb(pid)
  let rssMaxMb = rssBeforeMb
  let answered = 0
  ws.on('message', () => { answered++ })
  ws.pause() // stop reading
  for (let i = 0; i < 20_000; i++) ws.send(packr.pack({ id: String(i), model: 'tiny-classifier', ...body }))
  for (let i = 0; i < 20; i++) { await sleep(500); rssMaxMb = Math.max(rssMaxMb, rssMb(pid)) }
  ws.resume()
  await sleep(2000)
  ws.close()
  slow = { rssBeforeMb, rssMaxMb, answeredAfterResume: answered }
} finally {
  await stop(server)
}

// The same with the light class inline (`"runtime": "inline"`): no thread
// hand-off per batch. HTTP + JSON and the best protocol.
const inlineConfig = join(ROOT, 'perf', 'out', 'protocols-platform-inline.json')
writeFileSync(inlineConfig, JSON.stringify(platform(undefined, true, undefined, 'inline'), null, 2))
const inl = await startFairway(inlineConfig)
try {
  rows.push(await measureProtocol('fairway, light class inline, HTTP + JSON', inl, httpClient(inl.url, 'json', 128), 128))
  rows.push(await measureProtocol('fairway, light class inline, WebSocket + MessagePack', inl, await wsClient(inl.url, 4), 256))
} finally {
  await stop(inl)
}

// The cost pipeline's price in throughput: HTTP + JSON saturation with cost
// events off, on a second server started the same way, right after.
const offConfig = join(ROOT, 'perf', 'out', 'protocols-platform-nocost.json')
writeFileSync(offConfig, JSON.stringify(platform(undefined, false), null, 2))
const off = await startFairway(offConfig)
let costOff: { rps: number, cpuUs: number, stealPct: number | null } = { rps: NaN, cpuUs: NaN, stealPct: null }
try {
  const client = httpClient(off.url, 'json', 128)
  await saturation(off, client, 128, 2)
  costOff = await saturation(off, client, 128, 6)
  await client.close()
} finally {
  await stop(off)
}

const base = rows[0]
const out: string[] = []
out.push(`\n## Protocols (issue #5), ${new Date().toISOString()}`, '')
out.push(`- machine: ${machine()}; Node ${process.version}; client in the same process tree on the same machine`)
out.push('- command: `npm run build && npm run bench:protocols` (perf/bench-protocols.ts); fairway on perf/out/protocols-platform.json (tenant without limits, dynamic batching on, cost events on); the inline rows on perf/out/protocols-platform-inline.json (the same with the light class `"runtime": "inline"`)')
out.push('- saturation: closed loop, 128 outstanding over HTTP (128 connections), 256 over WebSocket (4 connections x 64); CPU: server utime+stime / answered requests at a paced 3,000 req/s for 8 s', '')
const naive = baselines[1]
out.push('| server, protocol | saturation req/s | vs fairway HTTP + JSON | server CPU µs/request at saturation | vs naive | server CPU µs/request at 3,000 req/s | vs naive | hypervisor steal during saturation |', '|---|---|---|---|---|---|---|---|')
for (const r of [...baselines, ...rows]) {
  out.push(`| ${r.protocol}${r === base ? ' (baseline)' : ''} | ${r.saturation.toFixed(0)} | ${(r.saturation / (base?.saturation ?? 1)).toFixed(2)}x | ${r.satCpuUs.toFixed(1)} | ${(r.satCpuUs / (naive?.satCpuUs ?? NaN)).toFixed(2)}x | ${r.cpuUs.toFixed(1)} | ${(r.cpuUs / (naive?.cpuUs ?? NaN)).toFixed(2)}x | ${r.satStealPct === null ? '-' : `${r.satStealPct.toFixed(1)}%`} |`)
}
out.push('', `Cost pipeline on vs off (HTTP + JSON saturation, same script): ${(base?.saturation ?? NaN).toFixed(0)} vs ${costOff.rps.toFixed(0)} req/s, ratio ${((base?.saturation ?? NaN) / costOff.rps).toFixed(3)}; server CPU ${(base?.satCpuUs ?? NaN).toFixed(1)} vs ${costOff.cpuUs.toFixed(1)} µs/request.`)
if (slow !== null) {
  out.push('', `Slow reader: one WebSocket client sent 20,000 requests without reading for 10 s. Server RSS ${slow.rssBeforeMb.toFixed(0)} MB before, at most ${slow.rssMaxMb.toFixed(0)} MB meanwhile (+${(slow.rssMaxMb - slow.rssBeforeMb).toFixed(0)} MB); ${slow.answeredAfterResume} replies (answers and FW_ERR_WS_TOO_MANY_INFLIGHT refusals) arrived once it read again.`)
}
const text = out.join('\n') + '\n'
appendFileSync(join(ROOT, 'perf', 'RESULTS.md'), text)
console.log(text)
