// One load-generator thread. It owns 1/threads of every flow's rate and its
// own connections, sends each request at its INTENDED time from the arrival
// schedule (never waiting for earlier responses: open loop), and measures
// latency from that intended time. If this thread, a connection or the server
// falls behind, the requests that should have gone out meanwhile are sent late
// and their latency includes the lateness, so a stall shows up in every
// request it delayed (no coordinated omission).
//
// Transports: HTTP through one keep-alive client (perf/http-client.ts) shared
// by every http flow; each websocket flow has its own connections (the key is
// bound at upgrade). Send times come from a sub-millisecond clock
// (perf/send-clock.ts), not Node's millisecond timers.
//
// Reports: a progress delta once a second, and at the end per-flow counters,
// hdr histograms and per-second timelines (compressed base64) that the main
// thread merges.

import { parentPort, workerData } from 'node:worker_threads'
import { encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js'
import { Packr } from 'msgpackr'
import {
  ArrivalSchedule, newCounters, newHistogram, nowMs, SAMPLE_FIELDS, WS_ID_PLACEHOLDER, WS_MAX_INFLIGHT,
  type FlowCounters, type MainMessage, type WorkerFlow, type WorkerFlowResult, type WorkerInit, type WorkerMessage,
} from './loadgen-common.js'
import { encodePost, HttpClient, type HttpExchange } from './http-client.js'
import { SendClock } from './send-clock.js'
import { WsConnection } from './ws-client.js'

interface FlowState {
  readonly spec: WorkerFlow
  readonly sched: ArrivalSchedule
  readonly counters: FlowCounters
  readonly latency: Histogram
  readonly errorLatency: Histogram
  readonly service: Histogram
  readonly sendLag: Histogram
  transport: Transport
  // Timeline (see WorkerTimeline): the open second and its histogram.
  readonly tlOk: number[]
  readonly tlErrors: number[]
  readonly tlLatency: string[]
  tlSecond: number
  readonly tlHist: Histogram
}

/** Sends the requests of one or more flows; every request is completed exactly once (complete()). */
interface Transport {
  /** Connects before the run starts. */
  open (): Promise<void>
  send (req: InFlight): void
  close (): Promise<void>
}

const init = workerData as WorkerInit
if (parentPort === null) throw new Error('loadgen-worker must run in a worker thread')
const port = parentPort

let startAt = 0
let measureFrom = 0
let measureTo = 0
let inflight = 0
let scheduleDone = false
let finished = false

// Progress deltas since the last report.
let pSent = 0
let pOk = 0
let pNon2xx = 0
let pErrors = 0
const interval = newHistogram()

const samples: number[] | null = init.collectSamples > 0 ? [] : null

function us (ms: number): number {
  return Math.max(1, Math.round(ms * 1000))
}

/** One outstanding request; the HTTP subclass is also its HTTP client exchange. */
class InFlight {
  done = false
  /** When the request was written to a connection (0 until then). */
  wire = 0

  constructor (readonly flow: FlowState, readonly intended: number, readonly sent: number, readonly measured: boolean) {}

  /** Gives up on the request (timeout): counted now, late replies ignored. */
  expire (): void {
    complete(this, 0, '', 'timeout')
  }
}

class HttpInFlight extends InFlight implements HttpExchange {
  onWire (): void {
    this.wire = nowMs()
  }

  onResponse (status: number, errorCode: string): void {
    complete(this, status, errorCode, null)
  }

  onError (code: string): void {
    complete(this, 0, '', code)
  }

  override expire (): void {
    super.expire()
    httpTransport?.client.abandon(this)
  }
}

function addSample (flow: number, intended: number, sent: number, wire: number, lat: number, status: number, measured: boolean): void {
  if (samples !== null && samples.length < init.collectSamples * SAMPLE_FIELDS) samples.push(flow, intended, sent, wire, lat, status, measured ? 1 : 0)
}

/** Adds one completion (or drop) to the flow's per-second timeline. */
function timelineAdd (f: FlowState, now: number, okLatencyUs: number | null): void {
  const sec = Math.max(0, Math.floor((now - startAt) / 1000))
  if (sec !== f.tlSecond) sealSecond(f, sec)
  if (okLatencyUs === null) f.tlErrors[sec] = (f.tlErrors[sec] ?? 0) + 1
  else {
    f.tlOk[sec] = (f.tlOk[sec] ?? 0) + 1
    f.tlHist.recordValue(okLatencyUs)
  }
}

function sealSecond (f: FlowState, next: number): void {
  if (f.tlHist.totalCount > 0) f.tlLatency[f.tlSecond] = encodeIntoCompressedBase64(f.tlHist)
  f.tlHist.reset()
  f.tlSecond = next
}

function complete (req: InFlight, status: number, code: string, transportError: string | null): void {
  if (req.done) return
  req.done = true
  inflight--
  const now = nowMs()
  const lat = us(now - req.intended)
  const f = req.flow
  const ok = status >= 200 && status < 300
  interval.recordValue(lat)
  timelineAdd(f, now, ok ? lat : null)
  if (ok && now >= measureFrom && now < measureTo) f.counters.okInWindow++
  if (ok) pOk++
  else if (status !== 0) pNon2xx++
  else pErrors++
  if (req.measured) {
    const c = f.counters
    if (transportError !== null) {
      c.transport[transportError] = (c.transport[transportError] ?? 0) + 1
      f.errorLatency.recordValue(lat)
    } else {
      c.responses++
      c.status[status] = (c.status[status] ?? 0) + 1
      if (ok) {
        c.ok++
        f.latency.recordValue(lat)
        f.service.recordValue(us(now - (req.wire > 0 ? req.wire : req.sent)))
      } else {
        f.errorLatency.recordValue(lat)
        if (code !== '') c.codes[code] = (c.codes[code] ?? 0) + 1
      }
    }
  }
  addSample(f.spec.index, req.intended, req.sent, req.wire, lat, status, req.measured)
  if (scheduleDone && inflight === 0) finish()
}

class HttpTransport implements Transport {
  readonly client = new HttpClient(init.origin, init.connections)
  /** Per flow index: the whole request (head and body), encoded on first use. */
  private readonly prepared: Buffer[] = []

  async open (): Promise<void> {
    await this.client.open()
  }

  send (req: InFlight): void {
    const f = req.flow
    let bytes = this.prepared[f.spec.index]
    if (bytes === undefined) {
      bytes = encodePost(new URL(init.origin).host, f.spec.path, f.spec.headers, f.spec.body)
      this.prepared[f.spec.index] = bytes
    }
    this.client.send(bytes, req as HttpInFlight)
  }

  async close (): Promise<void> {
    this.client.close()
  }
}

const unpackr = new Packr({ useRecords: false })

/** A fairway WebSocket reply: an OIP response or an error, both with the client id. */
interface WsReply { id?: unknown, code?: unknown, status?: unknown }

interface WsConn {
  readonly ws: WsConnection
  open: boolean
  /** Messages the server has not answered yet (expired ones included: the server still counts them). */
  readonly pending: Map<string, InFlight>
}

/**
 * One websocket flow's connections on this thread. Messages go round-robin to
 * open connections with fewer than WS_MAX_INFLIGHT unanswered (fairway refuses
 * more, with an id-less error the generator could not match). When every
 * connection is full, a message waits here, in order, and is written when a
 * reply frees a slot: the wait is still part of its latency (measured from
 * the intended time), and `service_us` (from the write) leaves it out.
 * A connection the server closes is not reopened: its unanswered messages
 * fail with `ws_close_<code>`, the others carry on; with none left, messages
 * fail at once (with the upgrade's HTTP status and code if it was refused).
 */
class WsTransport implements Transport {
  private readonly conns: WsConn[] = []
  private readonly waiting: InFlight[] = []
  private waitHead = 0
  private rr = 0
  private nextId = 0
  /** Why no connection is open: an upgrade refusal (status, code) or a transport error. */
  private failure: { status: number, code: string, transport: string | null } = { status: 0, code: '', transport: 'ws_not_connected' }
  private readonly template: Buffer
  private readonly binary: boolean

  constructor (private readonly flow: WorkerFlow) {
    this.template = Buffer.from(typeof flow.body === 'string' ? Buffer.from(flow.body, 'utf8') : flow.body)
    this.binary = flow.encoding === 'msgpack'
  }

  async open (): Promise<void> {
    const url = init.origin.replace(/^http/, 'ws') + this.flow.path
    await Promise.all(Array.from({ length: this.flow.connections }, async () => { await this.connect(url) }))
  }

  /** Resolves when the connection is open or has failed (a failure is recorded, not thrown). */
  private async connect (url: string): Promise<void> {
    const c: WsConn = {
      ws: new WsConnection({ onMessage: (data, binary) => { this.onReply(c, data, binary) }, onClose: (code) => { this.onClose(c, code) } }),
      open: false,
      pending: new Map(),
    }
    try {
      const refused = await c.ws.open(url, this.flow.headers)
      if (refused !== null) { this.failure = { status: refused.status, code: refused.code, transport: null }; return }
      c.open = true
      this.conns.push(c)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      this.failure = { status: 0, code: '', transport: e.code ?? e.name }
    }
  }

  send (req: InFlight): void {
    if (this.waitHead < this.waiting.length) { this.wait(req); return }
    const c = this.pick()
    if (c !== null) this.write(c, req)
    else if (this.conns.some((x) => x.open)) this.wait(req)
    else this.fail(req)
  }

  private wait (req: InFlight): void {
    if (req.measured) req.flow.counters.localWaits++
    this.waiting.push(req)
  }

  private fail (req: InFlight): void {
    const f = this.failure
    complete(req, f.status, f.code, f.transport)
  }

  /** Next open connection with room, round-robin; null when all are full or closed. */
  private pick (): WsConn | null {
    const n = this.conns.length
    for (let k = 0; k < n; k++) {
      const c = this.conns[(this.rr + k) % n] as WsConn
      if (c.open && c.pending.size < WS_MAX_INFLIGHT) {
        this.rr = (this.rr + k + 1) % n
        return c
      }
    }
    return null
  }

  private write (c: WsConn, req: InFlight): void {
    const id = (this.nextId++).toString(36).padStart(WS_ID_PLACEHOLDER.length, '0')
    const msg = Buffer.allocUnsafe(this.template.length)
    this.template.copy(msg)
    msg.write(id, this.flow.idOffset, 'latin1')
    c.pending.set(id, req)
    req.wire = nowMs()
    c.ws.send(msg, this.binary)
  }

  private onReply (c: WsConn, data: Buffer, isBinary: boolean): void {
    let m: WsReply
    try {
      m = (isBinary ? unpackr.unpack(data) : JSON.parse(data.toString('utf8'))) as WsReply
    } catch {
      return // not a fairway reply; its request will time out
    }
    const id = typeof m.id === 'string' ? m.id : ''
    const req = c.pending.get(id)
    if (req === undefined) return
    c.pending.delete(id)
    if (typeof m.code === 'string') complete(req, typeof m.status === 'number' ? m.status : 0, m.code, typeof m.status === 'number' ? null : 'ws_error_reply')
    else complete(req, 200, '', null)
    this.drain(c)
  }

  /** Writes waiting messages (skipping expired ones) while the connection has room. */
  private drain (c: WsConn): void {
    while (this.waitHead < this.waiting.length && c.open && c.pending.size < WS_MAX_INFLIGHT) {
      const r = this.waiting[this.waitHead++] as InFlight
      if (!r.done) this.write(c, r)
    }
    if (this.waitHead === this.waiting.length) { this.waiting.length = 0; this.waitHead = 0 } else if (this.waitHead > 4096 && this.waitHead * 2 > this.waiting.length) { this.waiting.splice(0, this.waitHead); this.waitHead = 0 }
  }

  private onClose (c: WsConn, code: number): void {
    if (!c.open) return
    c.open = false
    const why = `ws_close_${code}`
    for (const r of c.pending.values()) complete(r, 0, '', why)
    c.pending.clear()
    if (this.conns.some((x) => x.open)) return
    this.failure = { status: 0, code: '', transport: why }
    while (this.waitHead < this.waiting.length) this.fail(this.waiting[this.waitHead++] as InFlight)
  }

  async close (): Promise<void> {
    for (const c of this.conns) { c.open = false; c.ws.terminate() }
  }
}

let httpTransport: HttpTransport | null = null

function transportFor (f: WorkerFlow): Transport {
  if (f.protocol === 'websocket') return new WsTransport(f)
  httpTransport ??= new HttpTransport()
  return httpTransport
}

const flows: FlowState[] = init.flows.map((f) => ({
  spec: f,
  sched: new ArrivalSchedule(f.segments, f.arrival, init.index, init.threads, f.seed),
  counters: newCounters(),
  latency: newHistogram(),
  errorLatency: newHistogram(),
  service: newHistogram(),
  sendLag: newHistogram(),
  transport: transportFor(f),
  tlOk: [],
  tlErrors: [],
  tlLatency: [],
  tlSecond: 0,
  tlHist: newHistogram(),
}))
const transports = [...new Set(flows.map((f) => f.transport))]

// Outstanding requests in send order (= intended order), for the timeout sweep.
let queue: InFlight[] = []
let qHead = 0

function sweep (): void {
  const limit = nowMs() - init.timeoutMs
  while (qHead < queue.length) {
    const r = queue[qHead] as InFlight
    if (!r.done) {
      if (r.intended > limit) break
      r.expire()
    }
    qHead++
  }
  if (qHead > 4096 && qHead * 2 > queue.length) { queue = queue.slice(qHead); qHead = 0 }
}

function fire (f: FlowState, intended: number): void {
  const measured = intended >= measureFrom && intended < measureTo
  const c = f.counters
  if (measured) c.intended++
  if (inflight >= init.maxInflight) {
    if (measured) c.dropped++
    pErrors++
    timelineAdd(f, nowMs(), null)
    addSample(f.spec.index, intended, 0, 0, -1, 0, measured)
    return
  }
  const sent = nowMs()
  if (measured) {
    c.sent++
    f.sendLag.recordValue(us(sent - intended))
  } else {
    c.warmupSent++
  }
  pSent++
  inflight++
  const req = f.spec.protocol === 'http' ? new HttpInFlight(f, intended, sent, measured) : new InFlight(f, intended, sent, measured)
  queue.push(req)
  f.transport.send(req)
}

const clock = new SendClock(tick)

function tick (): void {
  const rel = nowMs() - startAt
  let next = Infinity
  for (const f of flows) {
    let t = f.sched.peek()
    while (t <= rel) {
      fire(f, startAt + t)
      f.sched.advance()
      t = f.sched.peek()
    }
    if (t < next) next = t
  }
  if (next === Infinity) {
    scheduleDone = true
    if (inflight === 0) finish()
    return
  }
  // Nothing is sent early; lateness (the clock's slack, a busy event loop)
  // is measured (send_lag) and included in latency.
  clock.at(startAt + next)
}

let progressTimer: NodeJS.Timeout | null = null
let sweepTimer: NodeJS.Timeout | null = null

function reportProgress (): void {
  const msg: WorkerMessage = { type: 'progress', index: init.index, sent: pSent, ok: pOk, non2xx: pNon2xx, errors: pErrors, inflight, interval: encodeIntoCompressedBase64(interval) }
  pSent = pOk = pNon2xx = pErrors = 0
  interval.reset()
  ;port.postMessage(msg)
}

/** Dense per-second arrays (seconds without completions are 0 / ''). */
function timelineOf (f: FlowState): WorkerFlowResult['timeline'] {
  sealSecond(f, f.tlSecond + 1)
  const n = Math.max(f.tlOk.length, f.tlErrors.length, f.tlLatency.length)
  const fill = <T>(a: T[], empty: T): T[] => Array.from({ length: n }, (_, i) => a[i] ?? empty)
  return { ok: fill(f.tlOk, 0), errors: fill(f.tlErrors, 0), latency: fill(f.tlLatency, '') }
}

function finish (): void {
  if (finished) return
  finished = true
  clock.stop()
  if (progressTimer !== null) clearInterval(progressTimer)
  if (sweepTimer !== null) clearInterval(sweepTimer)
  reportProgress()
  const results: WorkerFlowResult[] = flows.map((f) => ({
    counters: f.counters,
    latency: encodeIntoCompressedBase64(f.latency),
    errorLatency: encodeIntoCompressedBase64(f.errorLatency),
    service: encodeIntoCompressedBase64(f.service),
    sendLag: encodeIntoCompressedBase64(f.sendLag),
    timeline: timelineOf(f),
  }))
  const packed = samples === null ? null : Float64Array.from(samples)
  const msg: WorkerMessage = { type: 'done', index: init.index, flows: results, samples: packed }
  ;port.postMessage(msg, packed === null ? [] : [packed.buffer])
  Promise.all(transports.map((t) => t.close())).catch(() => {}).finally(() => port.unref())
}

port.on('message', (m: MainMessage) => {
  if (m.type !== 'start') return
  startAt = m.startAt
  measureFrom = startAt + init.warmupMs
  measureTo = measureFrom + init.durationMs
  const first = Math.max(0, startAt - nowMs())
  setTimeout(() => {
    progressTimer = setInterval(reportProgress, 1000)
    sweepTimer = setInterval(sweep, Math.min(100, Math.max(10, init.timeoutMs / 10)))
    clock.at(startAt)
  }, first)
})

// Connections are opened (or refused) before the run starts, so
// connection setup is not charged to the first messages.
Promise.all(transports.map((t) => t.open())).then(
  () => { port.postMessage({ type: 'ready' } satisfies WorkerMessage) },
  (err: unknown) => { port.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) } satisfies WorkerMessage) },
)
