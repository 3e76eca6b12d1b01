// Shared by the load generator's main thread (perf/loadgen.ts) and its worker
// threads (perf/loadgen-worker.ts): the scenario types, the arrival schedule
// (piecewise-constant rate, constant or Poisson arrivals) and histogram setup.
//
// Time: every timestamp that crosses threads is epoch milliseconds with
// sub-millisecond precision (performance.timeOrigin + performance.now()), so
// the main thread, each worker, and a server in the same process agree.

import { performance } from 'node:perf_hooks'
import { build, type Histogram } from 'hdr-histogram-js'
import { mulberry32 } from '../scripts/model-specs.js'

export type Arrival = 'constant' | 'poisson'
/** 'http': one POST per request (perf/http-client.ts); 'websocket': one message per request on /v2/ws (perf/ws-client.ts). */
export type Protocol = 'http' | 'websocket'
export type Encoding = 'json' | 'msgpack'

export interface PhaseSpec {
  /** Seconds from the start of the measured period (after warmup). */
  from_s: number
  to_s: number
  /** Requests/s for the whole flow (all generator threads together) inside [from_s, to_s). */
  rate: number
}

export interface FlowSpec {
  name: string
  /** Label results are grouped by in the per-tenant view; defaults to `name`. */
  tenant?: string
  /** API key, sent as `Authorization: Bearer <key>`; omit for servers without auth. */
  key?: string
  model: string
  /** Pins a model version (POST /v2/models/M/versions/V/infer). */
  version?: string
  /** Rows per request (shape[0]). */
  rows: number
  /** Requests/s for the whole flow, outside any phase (also during warmup). */
  rate: number
  arrival: Arrival
  protocol: Protocol
  encoding: Encoding
  phases?: PhaseSpec[]
  /** Model input tensor name and width; known for the demo models, else read from GET /v2/models/M. */
  input_name?: string
  input_dim?: number
  /** Extra request headers (websocket: sent on the upgrade request). */
  headers?: Record<string, string>
  /** websocket only: connections per generator thread for this flow (default DEFAULTS.ws_connections). */
  connections?: number
}

export interface Scenario {
  /** Free text: what the scenario measures (shown nowhere but the file and the result JSON). */
  description?: string
  /** Base URL of the server, e.g. http://127.0.0.1:8000 */
  target: string
  /** Measured seconds (after warmup). */
  duration_s: number
  warmup_s?: number
  /** Generator worker threads; each owns 1/threads of every flow's rate and its own connections. */
  threads?: number
  /** Keep-alive HTTP connections per worker thread. */
  connections?: number
  /** Per-request timeout; a request without a response by then counts as a transport error 'timeout'. */
  timeout_ms?: number
  /** Requests a worker may have outstanding before it refuses to send (counted as `dropped`). */
  max_inflight?: number
  /** Seed for Poisson arrivals and request payloads (default: random). */
  seed?: number
  flows: FlowSpec[]
}

export const DEFAULTS = {
  warmup_s: 2,
  threads: 1,
  connections: 64,
  timeout_ms: 10_000,
  max_inflight: 20_000,
  /**
   * WebSocket connections per thread per flow. Each carries up to
   * WS_MAX_INFLIGHT messages, so 4 allow 1,024 outstanding per thread while
   * costing the server only 4 sockets (HTTP needs a connection per request in flight).
   */
  ws_connections: 4,
} as const

/** fairway's per-connection cap (src/gateway/ws-routes.ts MAX_INFLIGHT); beyond it the generator queues locally. */
export const WS_MAX_INFLIGHT = 256

/**
 * WebSocket messages are built once per flow with this placeholder as the
 * client id; the worker writes a fresh fixed-width id over it per message
 * (a copy and 8 byte writes instead of a JSON or MessagePack encode).
 */
export const WS_ID_PLACEHOLDER = '########'

/** A stretch of the run with one rate; times in ms from the start of the run (warmup start). */
export interface Segment {
  readonly startMs: number
  readonly endMs: number
  /** Whole-flow rate, requests/s. */
  readonly rate: number
}

/**
 * The flow's rate over the whole run [0, warmup + duration) as contiguous
 * segments. Phases are relative to the measured period and override the base
 * rate; they must not overlap (validateScenario checks).
 */
export function segmentsFor (flow: FlowSpec, warmupS: number, durationS: number): Segment[] {
  const end = (warmupS + durationS) * 1000
  const phases = [...(flow.phases ?? [])]
    .map((p) => ({ s: Math.max(0, (warmupS + p.from_s) * 1000), e: Math.min(end, (warmupS + p.to_s) * 1000), rate: p.rate }))
    .filter((p) => p.e > p.s)
    .sort((a, b) => a.s - b.s)
  const out: Segment[] = []
  let t = 0
  for (const p of phases) {
    if (p.s > t) out.push({ startMs: t, endMs: p.s, rate: flow.rate })
    out.push({ startMs: p.s, endMs: p.e, rate: p.rate })
    t = p.e
  }
  if (t < end) out.push({ startMs: t, endMs: end, rate: flow.rate })
  return out
}

/** Requests the schedule asks for in [fromMs, toMs) of the run: the integral of the rate. */
export function expectedCount (segments: readonly Segment[], fromMs: number, toMs: number): number {
  let n = 0
  for (const s of segments) {
    const a = Math.max(s.startMs, fromMs)
    const b = Math.min(s.endMs, toMs)
    if (b > a) n += s.rate * (b - a) / 1000
  }
  return n
}

/** Seedable PRNG for arrival jitter and payloads: the same mulberry32 the model builder uses. */
export const rng = mulberry32

/**
 * One worker's share of one flow's arrivals. With T threads each worker runs
 * at rate/T; for constant arrivals worker i is offset by i/rate inside every
 * segment, so the merged stream is evenly spaced at 1/rate. For Poisson the
 * superposition of T independent Poisson processes at rate/T is Poisson at
 * rate, and restarting at a segment boundary is exact (memorylessness).
 */
export class ArrivalSchedule {
  private seg = -1
  private nextMs = Infinity
  private readonly random: () => number

  constructor (
    private readonly segments: readonly Segment[],
    private readonly arrival: Arrival,
    private readonly index: number,
    private readonly threads: number,
    seed: number,
  ) {
    // Each worker draws its own stream: the same seed would give every
    // thread identical Poisson gaps (bunched pairs, not a Poisson stream).
    this.random = rng((seed + Math.imul(0x9e3779b9, index + 1)) >>> 0)
    this.enterSegment(0)
  }

  /** Next intended send time in ms from the start of the run; Infinity when the schedule is over. */
  peek (): number {
    return this.nextMs
  }

  /** Consumes the current arrival and computes the one after it. */
  advance (): void {
    const s = this.segments[this.seg]
    if (s === undefined) { this.nextMs = Infinity; return }
    const cand = this.nextMs + this.gap(s.rate)
    if (cand < s.endMs) this.nextMs = cand
    else this.enterSegment(this.seg + 1)
  }

  private gap (rate: number): number {
    const mine = rate / this.threads
    if (this.arrival === 'constant') return 1000 / mine
    // Exponential inter-arrival; 1 - U is in (0, 1] so the log is finite.
    return -Math.log(1 - this.random()) * 1000 / mine
  }

  private enterSegment (from: number): void {
    for (let i = from; i < this.segments.length; i++) {
      const s = this.segments[i] as Segment
      if (s.rate <= 0) continue
      const first = this.arrival === 'constant' ? s.startMs + this.index * 1000 / s.rate : s.startMs + this.gap(s.rate)
      if (first < s.endMs) { this.seg = i; this.nextMs = first; return }
    }
    this.seg = this.segments.length
    this.nextMs = Infinity
  }
}

/** Latency histograms hold microseconds, 1 µs .. 1 h, 3 significant digits. */
export function newHistogram (): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, autoResize: true })
}

export function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

/** Input tensor name and width of the demo models, so scenarios need not repeat them. */
export const KNOWN_INPUTS: Record<string, { name: string, dim: number }> = {
  'tiny-classifier': { name: 'input', dim: 64 },
  ranker: { name: 'features', dim: 256 },
  'heavy-encoder': { name: 'input', dim: 128 },
}

// ---- messages between the main thread and the workers ----

export interface WorkerFlow {
  readonly index: number
  /** http: the infer path; websocket: the upgrade path (/v2/ws). */
  readonly path: string
  /** http: every request's headers; websocket: the upgrade request's. */
  readonly headers: Record<string, string>
  /**
   * http: the request body (JSON text or MessagePack bytes); websocket: the
   * message (UTF-8 JSON or MessagePack) with WS_ID_PLACEHOLDER at `idOffset`.
   * Built once per flow.
   */
  readonly body: string | Uint8Array
  /** websocket: byte offset of the id placeholder in `body`. */
  readonly idOffset: number
  readonly segments: Segment[]
  readonly arrival: Arrival
  readonly protocol: Protocol
  readonly encoding: Encoding
  /** websocket: connections per thread for this flow. */
  readonly connections: number
  readonly seed: number
}

export interface WorkerInit {
  readonly index: number
  readonly threads: number
  readonly origin: string
  readonly connections: number
  readonly timeoutMs: number
  readonly maxInflight: number
  readonly warmupMs: number
  readonly durationMs: number
  readonly collectSamples: number
  readonly flows: WorkerFlow[]
}

export interface FlowCounters {
  /** Arrivals the schedule produced in the measured window (sent or dropped). */
  intended: number
  sent: number
  /** Refused by the generator because max_inflight requests were outstanding. */
  dropped: number
  /** Got an HTTP response (any status). */
  responses: number
  ok: number
  /** 2xx responses that arrived during the measured period, whenever they were intended. */
  okInWindow: number
  status: Record<string, number>
  /** x-fairway-error-code of non-2xx responses. */
  codes: Record<string, number>
  /** Failures without a response: 'timeout', ECONNRESET, ws_close_1006, ... */
  transport: Record<string, number>
  warmupSent: number
  /** websocket: messages that waited in the generator for a connection below WS_MAX_INFLIGHT. */
  localWaits: number
}

export function newCounters (): FlowCounters {
  return { intended: 0, sent: 0, dropped: 0, responses: 0, ok: 0, okInWindow: 0, status: {}, codes: {}, transport: {}, warmupSent: 0, localWaits: 0 }
}

export function addCounters (into: FlowCounters, c: FlowCounters): void {
  into.intended += c.intended
  into.sent += c.sent
  into.dropped += c.dropped
  into.responses += c.responses
  into.ok += c.ok
  into.okInWindow += c.okInWindow
  into.warmupSent += c.warmupSent
  into.localWaits += c.localWaits
  for (const k of ['status', 'codes', 'transport'] as const) {
    for (const [key, n] of Object.entries(c[k])) into[k][key] = (into[k][key] ?? 0) + n
  }
}

export interface WorkerFlowResult {
  readonly counters: FlowCounters
  /** Compressed-base64 hdr histograms (µs). */
  readonly latency: string
  readonly errorLatency: string
  readonly service: string
  readonly sendLag: string
  readonly timeline: WorkerTimeline
}

/**
 * Per-second buckets by completion time, second 0 = the start of the run
 * (warmup included). Bucketing by completion lets a worker keep one open
 * histogram per flow and seal it each second (as HdrHistogram interval logs
 * do); a stall therefore shows at the second its backlog is answered.
 */
export interface WorkerTimeline {
  /** 2xx responses completed in each second. */
  readonly ok: number[]
  /** Error responses, transport errors and drops in each second. */
  readonly errors: number[]
  /** Compressed-base64 hdr histogram of the 2xx latencies (µs) per second; '' when none. */
  readonly latency: string[]
}

/** Per-request record kept when samples are requested (tests, debugging). */
export interface Sample {
  readonly flow: number
  /** Epoch ms. */
  readonly intendedMs: number
  /** When the generator handed the request to its HTTP client (0 if dropped). */
  readonly sentMs: number
  /** When the client wrote it to a connection (0 if never). */
  readonly wireMs: number
  /** From the intended send time; -1 when the request was dropped. */
  readonly latencyUs: number
  /** HTTP status, 0 for a transport error or a drop. */
  readonly status: number
  readonly measured: boolean
}

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'progress', index: number, sent: number, ok: number, non2xx: number, errors: number, inflight: number, interval: string }
  | { type: 'done', index: number, flows: WorkerFlowResult[], samples: Float64Array | null }
  | { type: 'error', message: string }

export type MainMessage = { type: 'start', startAt: number }

/** Fields of a packed sample row (Float64Array, SAMPLE_FIELDS per request). */
export const SAMPLE_FIELDS = 7
