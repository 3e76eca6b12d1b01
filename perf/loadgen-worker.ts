// One load-generator thread. It owns 1/threads of every flow's rate and its
// own keep-alive connections, sends each request at its INTENDED time from the
// arrival schedule (never waiting for earlier responses: open loop), and
// measures latency from that intended time. If this thread, a connection or
// the server falls behind, the requests that should have gone out meanwhile
// are sent late and their latency includes the lateness, so a stall shows up
// in every request it delayed (no coordinated omission).
//
// Reports: a progress delta once a second, and at the end per-flow counters
// and hdr histograms (compressed base64) that the main thread merges.

import { parentPort, workerData } from 'node:worker_threads'
import { encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js'
import { Pool, type Dispatcher } from 'undici'
import {
  ArrivalSchedule, newCounters, newHistogram, nowMs, SAMPLE_FIELDS,
  type FlowCounters, type MainMessage, type WorkerFlow, type WorkerFlowResult, type WorkerInit, type WorkerMessage,
} from './loadgen-common.js'

interface FlowState {
  readonly spec: WorkerFlow
  readonly sched: ArrivalSchedule
  readonly headers: string[]
  readonly body: string | Buffer
  readonly counters: FlowCounters
  readonly latency: Histogram
  readonly errorLatency: Histogram
  readonly service: Histogram
  readonly sendLag: Histogram
}

/** Sends one request of a flow; `done` is called exactly once. */
interface Transport {
  send (flow: FlowState, req: InFlight): void
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

const flows: FlowState[] = init.flows.map((f) => ({
  spec: f,
  sched: new ArrivalSchedule(f.segments, f.arrival, init.index, init.threads, f.seed),
  headers: Object.entries(f.headers).flat(),
  body: typeof f.body === 'string' ? f.body : Buffer.from(f.body),
  counters: newCounters(),
  latency: newHistogram(),
  errorLatency: newHistogram(),
  service: newHistogram(),
  sendLag: newHistogram(),
}))

function us (ms: number): number {
  return Math.max(1, Math.round(ms * 1000))
}

/** One outstanding request; also the undici dispatch handler. */
class InFlight implements Dispatcher.DispatchHandlers {
  done = false
  /** When undici wrote the request to a connection (0 until then). */
  wire = 0
  private status = 0
  private code = ''
  private abortFn: ((err?: Error) => void) | null = null

  constructor (readonly flow: FlowState, readonly intended: number, readonly sent: number, readonly measured: boolean) {}

  onConnect (abort: (err?: Error) => void): void {
    if (this.done) { abort(); return }
    this.abortFn = abort
    this.wire = nowMs()
  }

  onHeaders (statusCode: number, headers: Buffer[]): boolean {
    if (statusCode < 200) return true
    this.status = statusCode
    if (statusCode >= 300) {
      for (let i = 0; i + 1 < headers.length; i += 2) {
        const name = (headers[i] as Buffer).toString('latin1').toLowerCase()
        if (name === 'x-fairway-error-code') { this.code = (headers[i + 1] as Buffer).toString('latin1'); break }
      }
    }
    return true
  }

  onData (): boolean {
    return true
  }

  onComplete (): void {
    complete(this, this.status, this.code, null)
  }

  onError (err: Error): void {
    complete(this, 0, '', (err as { code?: string }).code ?? err.name)
  }

  /** Gives up on the request (timeout): counted now, late callbacks ignored. */
  expire (): void {
    complete(this, 0, '', 'timeout')
    if (this.abortFn !== null) this.abortFn()
  }
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
  if (samples !== null && samples.length < init.collectSamples * SAMPLE_FIELDS) {
    samples.push(f.spec.index, req.intended, req.sent, req.wire, lat, status, req.measured ? 1 : 0)
  }
  if (scheduleDone && inflight === 0) finish()
}

class HttpTransport implements Transport {
  private readonly pool: Pool

  constructor () {
    this.pool = new Pool(init.origin, {
      connections: init.connections,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 600_000,
      // Our own sweep enforces the timeout from the intended send time;
      // these only keep undici from giving up first.
      headersTimeout: init.timeoutMs * 2,
      bodyTimeout: init.timeoutMs * 2,
    })
  }

  send (flow: FlowState, req: InFlight): void {
    this.pool.dispatch({ path: flow.spec.path, method: 'POST', headers: flow.headers, body: flow.body }, req)
  }

  async close (): Promise<void> {
    await this.pool.destroy()
  }
}

function transportFor (protocol: string): Transport {
  if (protocol === 'http') return new HttpTransport()
  throw new Error(`protocol ${protocol} is not implemented`)
}

// One transport per protocol in use; every http flow shares the pool (one origin).
const transports = new Map<string, Transport>()
for (const f of flows) if (!transports.has(f.spec.protocol)) transports.set(f.spec.protocol, transportFor(f.spec.protocol))

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
    if (samples !== null && samples.length < init.collectSamples * SAMPLE_FIELDS) samples.push(f.spec.index, intended, 0, 0, -1, 0, measured ? 1 : 0)
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
  const req = new InFlight(f, intended, sent, measured)
  queue.push(req)
  ;(transports.get(f.spec.protocol) as Transport).send(f, req)
}

let timer: NodeJS.Timeout | null = null

function tick (): void {
  timer = null
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
  // Timers have millisecond granularity; round up so nothing is sent early.
  // Lateness is measured (send_lag) and included in latency.
  const delay = startAt + next - nowMs()
  if (delay <= 0) setImmediate(tick)
  else timer = setTimeout(tick, Math.ceil(delay))
}

let progressTimer: NodeJS.Timeout | null = null
let sweepTimer: NodeJS.Timeout | null = null

function reportProgress (): void {
  const msg: WorkerMessage = { type: 'progress', index: init.index, sent: pSent, ok: pOk, non2xx: pNon2xx, errors: pErrors, inflight, interval: encodeIntoCompressedBase64(interval) }
  pSent = pOk = pNon2xx = pErrors = 0
  interval.reset()
  ;port.postMessage(msg)
}

function finish (): void {
  if (finished) return
  finished = true
  if (timer !== null) clearTimeout(timer)
  if (progressTimer !== null) clearInterval(progressTimer)
  if (sweepTimer !== null) clearInterval(sweepTimer)
  reportProgress()
  const results: WorkerFlowResult[] = flows.map((f) => ({
    counters: f.counters,
    latency: encodeIntoCompressedBase64(f.latency),
    errorLatency: encodeIntoCompressedBase64(f.errorLatency),
    service: encodeIntoCompressedBase64(f.service),
    sendLag: encodeIntoCompressedBase64(f.sendLag),
  }))
  const packed = samples === null ? null : Float64Array.from(samples)
  const msg: WorkerMessage = { type: 'done', index: init.index, flows: results, samples: packed }
  ;port.postMessage(msg, packed === null ? [] : [packed.buffer])
  Promise.all([...transports.values()].map((t) => t.close())).catch(() => {}).finally(() => port.unref())
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
    tick()
  }, first)
})

port.postMessage({ type: 'ready' } satisfies WorkerMessage)
