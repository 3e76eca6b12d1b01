// Open-loop load generator for fairway (and any Open Inference Protocol v2
// server). Requests leave at the times an arrival schedule dictates
// (constant-rate or Poisson, optionally in rate phases), whether or not earlier
// ones have been answered, and latency is measured from each request's
// INTENDED send time, so a server or client stall is charged to every request
// it held up (no coordinated omission). Sending is spread over worker threads
// (perf/loadgen-worker.ts), each with its share of the rate and its own
// connections (HTTP keep-alive or WebSocket); their hdr histograms are merged here.
//
// CLI:  node dist/perf/loadgen.js SCENARIO.json [--out FILE] [--html FILE] [--target URL]
//         [--duration S] [--warmup S] [--threads N] [--quiet]
// API:  runLoad(scenario, options) -> LoadResult;  formatTable(result);
//       renderHtml(result) in perf/report-html.ts
//
// Scenario (JSON): see perf/scenarios/*.json and the Scenario type in
// perf/loadgen-common.ts. Latencies in results are microseconds.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { Packr } from 'msgpackr'
import { decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js'
import {
  addCounters, DEFAULTS, expectedCount, KNOWN_INPUTS, newCounters, newHistogram, nowMs, rng, SAMPLE_FIELDS, segmentsFor, WS_ID_PLACEHOLDER,
  type FlowCounters, type FlowSpec, type MainMessage, type Sample, type Scenario, type WorkerFlow, type WorkerFlowResult, type WorkerInit, type WorkerMessage,
} from './loadgen-common.js'
import { cliNumber, parseCli } from './cli-args.js'
import { readCpuTicks, stealPct, type CpuTicks } from './cpu-steal.js'
import { ms, renderHtml, resultRows, stealNote } from './report-html.js'

export type { Scenario, FlowSpec, PhaseSpec, Sample, Arrival, Encoding, Protocol } from './loadgen-common.js'

export interface LatencySummary {
  count: number
  min: number
  mean: number
  p50: number
  p90: number
  p99: number
  p999: number
  max: number
}

export interface GroupResult {
  name: string
  /** Requests/s the schedule asked for over the measured period. */
  offered_rate: number
  intended: number
  sent: number
  dropped: number
  responses: number
  ok: number
  warmup_sent: number
  /** sent / duration. */
  sent_rate: number
  /** 2xx responses to the measured requests / duration (includes ones answered after the period ended). */
  ok_rate: number
  /** 2xx responses that arrived during the measured period / duration: throughput. */
  throughput: number
  /** Non-2xx responses (websocket: error replies) + transport errors + drops. */
  errors: number
  /** websocket: measured messages that waited in the generator for a connection below 256 in flight (their wait is in latency_us). */
  local_waits: number
  status: Record<string, number>
  error_codes: Record<string, number>
  transport_errors: Record<string, number>
  /** 2xx responses, from the intended send time (µs). */
  latency_us: LatencySummary
  /** Non-2xx responses and transport errors, from the intended send time (µs). */
  error_latency_us: LatencySummary
  /**
   * 2xx responses, from when the request was written to a connection (µs).
   * This is what a coordinated-omission-prone (closed-loop) tool reports: it
   * leaves out time spent waiting for a free connection or for the generator.
   */
  service_us: LatencySummary
  /** Actual minus intended send time (µs): how far the generator fell behind its schedule. */
  send_lag_us: LatencySummary
  /** latency_us as a compressed-base64 hdr histogram, for merging runs later. */
  histogram: string
}

export interface FlowResult extends GroupResult {
  tenant: string
  model: string
  rows: number
  arrival: string
  protocol: string
  encoding: string
  /** Connections per generator thread carrying this flow (http: the shared pool's size). */
  connections: number
}

/** One flow's per-second series; bucket i covers [start_s + i, start_s + i + 1) s from the start of the measured period. */
export interface TimelineSeries {
  name: string
  /** 2xx responses completed in the second (throughput). */
  ok: number[]
  /** Errors (non-2xx, transport, drops) in the second. */
  errors: number[]
  /** Latency (intended send time to response) of the 2xx responses completed in the second; 0 when none. */
  p50_us: number[]
  p99_us: number[]
  max_us: number[]
}

export interface Timeline {
  /** Seconds from the start of the measured period to bucket 0: -warmup_s. */
  start_s: number
  /** Epoch ms of bucket 0: when the schedule started (warmup included). */
  start_epoch_ms: number
  flows: TimelineSeries[]
  /** Hypervisor steal, % of all cores' time, per second (the same buckets as the flows'); null where unknown (off Linux). */
  steal_pct: Array<number | null>
}

export interface LoadResult {
  started_at: string
  target: string
  duration_s: number
  warmup_s: number
  threads: number
  connections: number
  flows: FlowResult[]
  tenants: GroupResult[]
  total: GroupResult
  /** CPU time of the generator process over the whole run (ms). */
  generator_cpu_ms: { user: number, system: number }
  /**
   * Hypervisor steal over the measured period, % of all cores' time (perf/cpu-steal.ts);
   * null off Linux. A high figure means part of the tail was the host's, not the server's.
   */
  machine_steal_pct: number | null
  /** The 2xx latency of the measured seconds the host left alone (see LowSteal); null off Linux. */
  low_steal: LowSteal | null
  /** Per-second throughput and latency by completion time, warmup and drain included. */
  timeline: Timeline
  scenario: Scenario
  samples?: Sample[]
}

/**
 * The measured seconds whose steal was under LOW_STEAL_PCT, all flows' 2xx
 * responses completed in them merged: what the tail is when the host does not
 * take the cores away. A diagnostic beside the whole run's figures, never
 * instead of them.
 */
export interface LowSteal {
  threshold_pct: number
  /** Measured seconds under the threshold, of all measured seconds. */
  seconds: number
  of: number
  ok: number
  p50_us: number
  p99_us: number
}

/** A second with less steal than this counts as one the host left alone. */
export const LOW_STEAL_PCT = 1

export interface RunOptions {
  /** Progress line once a second: true = stderr (default), false = off, or a sink. */
  progress?: boolean | ((line: string) => void)
  /** Keep up to this many per-request samples per worker (default 0). */
  collectSamples?: number
  /**
   * Epoch ms at which to start the schedule (warmup included), so that runs
   * in parallel share one clock; the run fails if its threads are not ready
   * by then. Default: 50 ms after they are ready.
   */
  startAt?: number
  /** Called when the measured period starts / ends (e.g. to read a server's CPU time). */
  onMeasureStart?: () => void
  onMeasureEnd?: () => void
}

// ---- scenario validation ----

export function validateScenario (raw: unknown): Scenario {
  const problems: string[] = []
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
  if (!isObj(raw)) throw new Error('scenario must be a JSON object')
  const num = (v: unknown, path: string, min: number, opt = false, int = false): void => {
    if (v === undefined && opt) return
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (int && !Number.isInteger(v))) problems.push(`${path} must be ${int ? 'an integer' : 'a number'} >= ${min}`)
  }
  if (raw.description !== undefined && typeof raw.description !== 'string') problems.push('description must be a string')
  if (typeof raw.target !== 'string' || !/^https?:\/\//.test(raw.target)) problems.push('target must be an http(s):// URL')
  num(raw.duration_s, 'duration_s', 0.001)
  num(raw.warmup_s, 'warmup_s', 0, true)
  num(raw.threads, 'threads', 1, true, true)
  num(raw.connections, 'connections', 1, true, true)
  num(raw.timeout_ms, 'timeout_ms', 1, true)
  num(raw.max_inflight, 'max_inflight', 1, true, true)
  num(raw.seed, 'seed', 0, true, true)
  if (!Array.isArray(raw.flows) || raw.flows.length === 0) problems.push('flows must be a non-empty array')
  else {
    const names = new Set<string>()
    raw.flows.forEach((f: unknown, i: number) => {
      const p = `flows[${i}]`
      if (!isObj(f)) { problems.push(`${p} must be an object`); return }
      if (typeof f.name !== 'string' || f.name === '') problems.push(`${p}.name must be a non-empty string`)
      else if (names.has(f.name)) problems.push(`${p}.name "${f.name}" is used twice`)
      else names.add(f.name)
      for (const k of ['tenant', 'key', 'version', 'input_name'] as const) if (f[k] !== undefined && typeof f[k] !== 'string') problems.push(`${p}.${k} must be a string`)
      if (typeof f.model !== 'string' || f.model === '') problems.push(`${p}.model must be a non-empty string`)
      num(f.rows, `${p}.rows`, 1, false, true)
      num(f.rate, `${p}.rate`, 0)
      num(f.input_dim, `${p}.input_dim`, 1, true, true)
      if (f.arrival !== 'constant' && f.arrival !== 'poisson') problems.push(`${p}.arrival must be "constant" or "poisson"`)
      if (f.protocol !== 'http' && f.protocol !== 'websocket') problems.push(`${p}.protocol must be "http" or "websocket"`)
      num(f.connections, `${p}.connections`, 1, true, true)
      if (f.connections !== undefined && f.protocol !== 'websocket') problems.push(`${p}.connections applies to websocket flows only (http flows share the scenario's connections)`)
      if (f.encoding !== 'json' && f.encoding !== 'msgpack') problems.push(`${p}.encoding must be "json" or "msgpack"`)
      if (f.headers !== undefined && (!isObj(f.headers) || !Object.values(f.headers).every((v) => typeof v === 'string'))) problems.push(`${p}.headers must map names to strings`)
      if (f.phases !== undefined) {
        if (!Array.isArray(f.phases)) problems.push(`${p}.phases must be an array`)
        else {
          const spans: Array<[number, number]> = []
          f.phases.forEach((ph: unknown, j: number) => {
            const q = `${p}.phases[${j}]`
            if (!isObj(ph)) { problems.push(`${q} must be an object`); return }
            num(ph.from_s, `${q}.from_s`, 0)
            num(ph.to_s, `${q}.to_s`, 0)
            num(ph.rate, `${q}.rate`, 0)
            if (typeof ph.from_s === 'number' && typeof ph.to_s === 'number') {
              if (ph.to_s <= ph.from_s) problems.push(`${q}.to_s must be greater than from_s`)
              for (const [a, b] of spans) if (ph.from_s < b && a < ph.to_s) problems.push(`${q} overlaps another phase`)
              spans.push([ph.from_s, ph.to_s])
            }
          })
        }
      }
    })
  }
  if (problems.length > 0) throw new Error(`invalid scenario:\n  ${problems.join('\n  ')}`)
  return raw as unknown as Scenario
}

export function loadScenario (file: string): Scenario {
  return validateScenario(JSON.parse(readFileSync(file, 'utf8')))
}

// ---- request bodies ----

const packr = new Packr({ useFloat32: 1, useRecords: false })

async function inputOf (target: string, flow: FlowSpec): Promise<{ name: string, dim: number }> {
  const known = KNOWN_INPUTS[flow.model]
  const name = flow.input_name ?? known?.name
  const dim = flow.input_dim ?? known?.dim
  if (name !== undefined && dim !== undefined) return { name, dim }
  // Ask the server (OIP model metadata).
  const headers: Record<string, string> = {}
  if (flow.key !== undefined) headers.authorization = `Bearer ${flow.key}`
  const res = await fetch(`${target}/v2/models/${encodeURIComponent(flow.model)}`, { headers })
  const meta = await res.json() as { inputs?: Array<{ name?: string, shape?: number[] }> }
  const inp = meta.inputs?.[0]
  const d = inp?.shape?.[1]
  if (!res.ok || inp?.name === undefined || typeof d !== 'number' || d < 1) {
    throw new Error(`flow ${flow.name}: cannot learn the input of model ${flow.model} from the server (HTTP ${res.status}); set input_name and input_dim`)
  }
  return { name: name ?? inp.name, dim: dim ?? d }
}

/** HTTP: the request body. websocket: the message, with the id placeholder first and its byte offset. */
function bodyFor (flow: FlowSpec, input: { name: string, dim: number }, seed: number): { body: string | Uint8Array, idOffset: number } {
  const r = rng(seed)
  const data: number[] = new Array(flow.rows * input.dim)
  for (let i = 0; i < data.length; i++) data[i] = Math.round((r() * 2 - 1) * 1e4) / 1e4
  const inputs = [{ name: input.name, datatype: 'FP32', shape: [flow.rows, input.dim], data }]
  if (flow.protocol === 'http') {
    const body = { inputs }
    return { body: flow.encoding === 'msgpack' ? new Uint8Array(packr.pack(body)) : JSON.stringify(body), idOffset: -1 }
  }
  // fairway's WebSocket message: OIP request + id + model (+ version).
  const msg = { id: WS_ID_PLACEHOLDER, model: flow.model, ...(flow.version === undefined ? {} : { version: flow.version }), inputs }
  const bytes = flow.encoding === 'msgpack' ? new Uint8Array(packr.pack(msg)) : new TextEncoder().encode(JSON.stringify(msg))
  return { body: bytes, idOffset: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(WS_ID_PLACEHOLDER, 0, 'latin1') }
}

// ---- histograms and summaries ----

function summarize (h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 }
  return {
    count: h.totalCount,
    min: h.minNonZeroValue,
    mean: Math.round(h.mean),
    p50: h.getValueAtPercentile(50),
    p90: h.getValueAtPercentile(90),
    p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9),
    max: h.maxValue,
  }
}

interface Group {
  name: string
  counters: FlowCounters
  offered: number
  latency: Histogram
  errorLatency: Histogram
  service: Histogram
  sendLag: Histogram
}

function newGroup (name: string): Group {
  return { name, counters: newCounters(), offered: 0, latency: newHistogram(), errorLatency: newHistogram(), service: newHistogram(), sendLag: newHistogram() }
}

function addGroup (into: Group, g: Group): void {
  addCounters(into.counters, g.counters)
  into.offered += g.offered
  into.latency.add(g.latency)
  into.errorLatency.add(g.errorLatency)
  into.service.add(g.service)
  into.sendLag.add(g.sendLag)
}

function groupResult (g: Group, durationS: number): GroupResult {
  const c = g.counters
  const transport = Object.values(c.transport).reduce((a, b) => a + b, 0)
  return {
    name: g.name,
    offered_rate: round(g.offered / durationS),
    intended: c.intended,
    sent: c.sent,
    dropped: c.dropped,
    responses: c.responses,
    ok: c.ok,
    warmup_sent: c.warmupSent,
    sent_rate: round(c.sent / durationS),
    ok_rate: round(c.ok / durationS),
    throughput: round(c.okInWindow / durationS),
    errors: c.responses - c.ok + transport + c.dropped,
    local_waits: c.localWaits,
    status: c.status,
    error_codes: c.codes,
    transport_errors: c.transport,
    latency_us: summarize(g.latency),
    error_latency_us: summarize(g.errorLatency),
    service_us: summarize(g.service),
    send_lag_us: summarize(g.sendLag),
    histogram: encodeIntoCompressedBase64(g.latency),
  }
}

function round (x: number): number {
  return Math.round(x * 10) / 10
}

/** See LowSteal: seconds [from, to) of the run's buckets (completion time), those under the threshold. */
export function lowSteal (parts: Array<WorkerFlowResult['timeline']>, steal: Array<number | null>, from: number, to: number): LowSteal | null {
  if (steal.every((v) => v === null)) return null
  const h = newHistogram()
  let seconds = 0
  let ok = 0
  for (let i = from; i < to; i++) {
    const v = steal[i]
    if (v === null || v === undefined || v >= LOW_STEAL_PCT) continue
    seconds++
    for (const p of parts) {
      ok += p.ok[i] ?? 0
      const enc = p.latency[i] ?? ''
      if (enc !== '') h.add(decodeFromCompressedBase64(enc))
    }
  }
  const sum = summarize(h)
  return { threshold_pct: LOW_STEAL_PCT, seconds, of: to - from, ok, p50_us: sum.p50, p99_us: sum.p99 }
}

/** Merges one flow's per-second worker timelines (bucket i = second i of the run). */
function mergeTimeline (name: string, parts: Array<WorkerFlowResult['timeline']>): TimelineSeries {
  const n = Math.max(0, ...parts.map((p) => p.ok.length))
  const out: TimelineSeries = { name, ok: [], errors: [], p50_us: [], p99_us: [], max_us: [] }
  for (let i = 0; i < n; i++) {
    const h = newHistogram()
    let ok = 0
    let errors = 0
    for (const p of parts) {
      ok += p.ok[i] ?? 0
      errors += p.errors[i] ?? 0
      const enc = p.latency[i] ?? ''
      if (enc !== '') h.add(decodeFromCompressedBase64(enc))
    }
    const s = summarize(h)
    out.ok.push(ok)
    out.errors.push(errors)
    out.p50_us.push(s.p50)
    out.p99_us.push(s.p99)
    out.max_us.push(s.max)
  }
  return out
}

// ---- the run ----

/** Upgrade request headers: the key and the flow's own; content type and accept are per frame. */
function wsHeaders (f: FlowSpec): Record<string, string> {
  return { ...(f.key === undefined ? {} : { authorization: `Bearer ${f.key}` }), ...f.headers }
}

function workerUrl (): URL {
  // Under a TypeScript loader (tap) this module is the .ts source; compiled, it is .js.
  return new URL(import.meta.url.endsWith('.ts') ? './loadgen-worker.ts' : './loadgen-worker.js', import.meta.url)
}

export async function runLoad (scenarioIn: Scenario, options: RunOptions = {}): Promise<LoadResult> {
  const scenario = validateScenario(scenarioIn)
  const warmupS = scenario.warmup_s ?? DEFAULTS.warmup_s
  const durationS = scenario.duration_s
  const threads = scenario.threads ?? DEFAULTS.threads
  const connections = scenario.connections ?? DEFAULTS.connections
  const flowConnections = (f: FlowSpec): number => f.protocol === 'websocket' ? f.connections ?? DEFAULTS.ws_connections : connections
  const seed = scenario.seed ?? Math.floor(Math.random() * 2 ** 31)
  const url = new URL(scenario.target)
  const base = url.pathname.replace(/\/+$/, '')
  const target = url.origin + base
  const progress = options.progress ?? true
  const log = progress === false ? null : progress === true ? (line: string) => process.stderr.write(line + '\n') : progress

  const flowSegments = scenario.flows.map((f) => segmentsFor(f, warmupS, durationS))
  const workerFlows: WorkerFlow[] = []
  for (const [i, f] of scenario.flows.entries()) {
    const input = await inputOf(target, f)
    const headers: Record<string, string> = {
      'content-type': f.encoding === 'msgpack' ? 'application/msgpack' : 'application/json',
      accept: f.encoding === 'msgpack' ? 'application/msgpack' : 'application/json',
      ...(f.key === undefined ? {} : { authorization: `Bearer ${f.key}` }),
      ...f.headers,
    }
    const path = f.protocol === 'websocket'
      ? `${base}/v2/ws`
      : `${base}/v2/models/${encodeURIComponent(f.model)}${f.version === undefined ? '' : `/versions/${encodeURIComponent(f.version)}`}/infer`
    const { body, idOffset } = bodyFor(f, input, seed + 7919 * i)
    workerFlows.push({
      index: i, path, headers: f.protocol === 'websocket' ? wsHeaders(f) : headers, body, idOffset, segments: flowSegments[i] ?? [],
      arrival: f.arrival, protocol: f.protocol, encoding: f.encoding, connections: flowConnections(f), seed: seed + 104729 * (i + 1),
    })
  }

  const startedAt = new Date().toISOString()
  const cpu0 = process.cpuUsage()
  const workers: Worker[] = []
  const done: Array<Extract<WorkerMessage, { type: 'done' }>> = []
  let tickSent = 0
  let tickOk = 0
  let tickNon2xx = 0
  let tickErrors = 0
  const tickInflight = new Array<number>(threads).fill(0)
  let tickHist = newHistogram()

  let runStart = 0
  const finished = new Promise<void>((resolveAll, reject) => {
    let ready = 0
    for (let i = 0; i < threads; i++) {
      const init: WorkerInit = {
        index: i,
        threads,
        origin: url.origin,
        connections,
        timeoutMs: scenario.timeout_ms ?? DEFAULTS.timeout_ms,
        maxInflight: scenario.max_inflight ?? DEFAULTS.max_inflight,
        warmupMs: warmupS * 1000,
        durationMs: durationS * 1000,
        collectSamples: options.collectSamples ?? 0,
        flows: workerFlows,
      }
      const w = new Worker(workerUrl(), { workerData: init })
      workers.push(w)
      w.on('error', (err) => reject(err))
      w.on('exit', (code) => { if (code !== 0 && done.length < threads) reject(new Error(`loadgen worker ${i} exited with code ${code}`)) })
      w.on('message', (m: WorkerMessage) => {
        switch (m.type) {
          case 'ready':
            if (++ready === threads) {
              const now = nowMs()
              if (options.startAt !== undefined && options.startAt < now) {
                reject(new Error(`loadgen: start time passed ${(now - options.startAt).toFixed(0)} ms before the generator threads were ready`))
                for (const x of workers) void x.terminate()
                return
              }
              const startAt = options.startAt ?? now + 50
              runStart = startAt
              for (const x of workers) x.postMessage({ type: 'start', startAt } satisfies MainMessage)
              startClock(startAt)
            }
            break
          case 'progress':
            tickSent += m.sent; tickOk += m.ok; tickNon2xx += m.non2xx; tickErrors += m.errors
            tickInflight[m.index] = m.inflight
            tickHist.add(decodeFromCompressedBase64(m.interval))
            break
          case 'done':
            done.push(m)
            if (done.length === threads) resolveAll()
            break
          case 'error':
            reject(new Error(m.message))
        }
      })
    }
  })

  const timers: NodeJS.Timeout[] = []
  // Each hook runs exactly once, in order: the workers can finish (last
  // response in) a moment before the main thread's end-of-period timer fires.
  let started = false
  let ended = false
  let stealFrom: CpuTicks | null = null
  let stealTo: CpuTicks | null = null
  const measureStart = (): void => {
    if (started) return
    started = true
    stealFrom = readCpuTicks()
    options.onMeasureStart?.()
  }
  const measureEnd = (): void => {
    if (ended) return
    measureStart()
    ended = true
    stealTo = readCpuTicks()
    options.onMeasureEnd?.()
  }
  // Steal per second of the run: /proc/stat read every 100 ms (~20 µs each,
  // on this thread, not the senders'), each interval's ticks added to the
  // second its midpoint falls in, as the workers bucket completions.
  const stealBuckets: Array<{ steal: number, total: number }> = []
  function sampleSteal (startAt: number): void {
    let prevAt = nowMs()
    let prev = readCpuTicks()
    if (prev === null) return
    timers.push(setInterval(() => {
      const at = nowMs()
      const cur = readCpuTicks()
      if (cur === null || prev === null) return
      const sec = Math.max(0, Math.floor(((prevAt + at) / 2 - startAt) / 1000))
      for (let k = stealBuckets.length; k <= sec; k++) stealBuckets.push({ steal: 0, total: 0 })
      const b = stealBuckets[sec] as { steal: number, total: number }
      b.steal += cur.steal - prev.steal
      b.total += cur.total - prev.total
      prev = cur
      prevAt = at
    }, 100))
  }
  function startClock (startAt: number): void {
    sampleSteal(startAt)
    const measureAt = startAt + warmupS * 1000
    const endAt = measureAt + durationS * 1000
    timers.push(setTimeout(measureStart, Math.max(0, measureAt - nowMs())))
    timers.push(setTimeout(measureEnd, Math.max(0, endAt - nowMs())))
    if (log === null) return
    // Worker reports arrive on their own one-second ticks from startAt; print shortly after each.
    const print = (): void => {
      const t = (nowMs() - startAt) / 1000
      const phase = t < warmupS ? 'warmup ' : t < warmupS + durationS ? 'measure' : 'drain  '
      const inflight = tickInflight.reduce((a, b) => a + b, 0)
      const p = tickHist.totalCount === 0 ? 'no responses' : `p50 ${ms(tickHist.getValueAtPercentile(50))} p99 ${ms(tickHist.getValueAtPercentile(99))} max ${ms(tickHist.maxValue)} ms`
      // The second that just ended (the sampler has moved on to the next one).
      const b = stealBuckets[Math.floor(t) - 1]
      const steal = b === undefined || b.total === 0 ? '' : ` steal ${(100 * b.steal / b.total).toFixed(0)}%`
      log?.(`[loadgen ${t.toFixed(0).padStart(4)}s ${phase}] sent ${tickSent}/s ok ${tickOk}/s non-2xx ${tickNon2xx} err ${tickErrors} inflight ${inflight} | last 1s ${p}${steal}`)
      tickSent = tickOk = tickNon2xx = tickErrors = 0
      tickHist = newHistogram()
    }
    timers.push(setTimeout(() => { print(); timers.push(setInterval(print, 1000)) }, Math.max(0, startAt + 1150 - nowMs())))
  }

  try {
    await finished
  } finally {
    for (const t of timers) clearTimeout(t)
    if (started) measureEnd()
    await Promise.all(workers.map((w) => w.terminate()))
  }
  const cpu = process.cpuUsage(cpu0)

  const stealSeries = stealBuckets.map((b) => b.total > 0 ? 100 * b.steal / b.total : null)
  // Merge: per flow over workers, then per tenant and total over flows.
  const groups = scenario.flows.map((f, i) => {
    const g = newGroup(f.name)
    g.offered = expectedCount(flowSegments[i] ?? [], warmupS * 1000, (warmupS + durationS) * 1000)
    for (const d of done) {
      const r = d.flows[i]
      if (r === undefined) continue
      addCounters(g.counters, r.counters)
      g.latency.add(decodeFromCompressedBase64(r.latency))
      g.errorLatency.add(decodeFromCompressedBase64(r.errorLatency))
      g.service.add(decodeFromCompressedBase64(r.service))
      g.sendLag.add(decodeFromCompressedBase64(r.sendLag))
    }
    return g
  })
  const tenants = new Map<string, Group>()
  const total = newGroup('total')
  scenario.flows.forEach((f, i) => {
    const g = groups[i] as Group
    const tn = f.tenant ?? f.name
    let tg = tenants.get(tn)
    if (tg === undefined) tenants.set(tn, tg = newGroup(tn))
    addGroup(tg, g)
    addGroup(total, g)
  })

  const result: LoadResult = {
    started_at: startedAt,
    target: scenario.target,
    duration_s: durationS,
    warmup_s: warmupS,
    threads,
    connections,
    flows: scenario.flows.map((f, i) => ({
      ...groupResult(groups[i] as Group, durationS),
      tenant: f.tenant ?? f.name,
      model: f.model,
      rows: f.rows,
      arrival: f.arrival,
      protocol: f.protocol,
      encoding: f.encoding,
      connections: flowConnections(f),
    })),
    tenants: [...tenants.values()].map((g) => groupResult(g, durationS)),
    total: groupResult(total, durationS),
    generator_cpu_ms: { user: Math.round(cpu.user / 1000), system: Math.round(cpu.system / 1000) },
    machine_steal_pct: stealPct(stealFrom, stealTo),
    low_steal: lowSteal(done.flatMap((d) => d.flows.map((r) => r.timeline)), stealSeries, Math.ceil(warmupS), Math.floor(warmupS + durationS)),
    timeline: {
      start_s: -warmupS,
      start_epoch_ms: runStart,
      flows: scenario.flows.map((f, i) => mergeTimeline(f.name, done.flatMap((d) => d.flows.slice(i, i + 1).map((r) => r.timeline)))),
      steal_pct: stealSeries,
    },
    scenario,
  }
  if ((options.collectSamples ?? 0) > 0) {
    const samples: Sample[] = []
    for (const d of done) {
      const s = d.samples
      if (s === null) continue
      for (let k = 0; k + SAMPLE_FIELDS <= s.length; k += SAMPLE_FIELDS) {
        samples.push({ flow: s[k] as number, intendedMs: s[k + 1] as number, sentMs: s[k + 2] as number, wireMs: s[k + 3] as number, latencyUs: s[k + 4] as number, status: s[k + 5] as number, measured: s[k + 6] === 1 })
      }
    }
    samples.sort((a, b) => a.intendedMs - b.intendedMs)
    result.samples = samples
  }
  return result
}

// ---- reporting ----

export function renderTable (headers: string[], rows: string[][], rightAlign: (col: number) => boolean = (c) => c > 0): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => rightAlign(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

/** Readable summary: one row per flow, then per tenant (when they differ) and the total. */
export function formatTable (r: LoadResult): string {
  const { title, headers, rows } = resultRows(r)
  const steal = stealNote(r)
  return `${title}\n${renderTable(headers, rows, (c) => c > 0 && c < headers.length - 1)}${steal === '' ? '' : `\n${steal}`}`
}

// ---- CLI ----

const USAGE = `usage: node dist/perf/loadgen.js SCENARIO.json [options]   (npm run bench -- SCENARIO.json [options])
  --out FILE      JSON results (default perf/out/loadgen-<time>.json)
  --html FILE     HTML report (default: next to the JSON)
  --target URL    overrides the scenario's target
  --duration S    overrides duration_s
  --warmup S      overrides warmup_s
  --threads N     overrides threads (generator worker threads)
  --quiet         no progress line
  --help          this text
The scenario format is in perf/README.md; perf/scenarios/ has examples.`

async function main (): Promise<number> {
  const { values, positionals } = parseCli(USAGE, {
    out: { type: 'string' },
    html: { type: 'string' },
    target: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    threads: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  }, true)
  const file = positionals[0]
  if (file === undefined || positionals.length > 1) {
    console.error(USAGE)
    return 2
  }
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>
  if (values.target !== undefined) raw.target = values.target
  if (values.duration !== undefined) raw.duration_s = cliNumber(USAGE, 'duration', values.duration, 0)
  if (values.warmup !== undefined) raw.warmup_s = cliNumber(USAGE, 'warmup', values.warmup, 0)
  if (values.threads !== undefined) raw.threads = cliNumber(USAGE, 'threads', values.threads, 1)
  const scenario = validateScenario(raw)
  const result = await runLoad(scenario, { progress: !values.quiet })
  const out = values.out ?? resolve('perf', 'out', `loadgen-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  // The HTML report goes next to the JSON unless --html says elsewhere.
  const html = values.html ?? out.replace(/\.json$/, '') + '.html'
  mkdirSync(dirname(html), { recursive: true })
  writeFileSync(html, renderHtml(result))
  console.log(formatTable(result))
  console.log(`results: ${out}\nreport:  ${html}`)
  return 0
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then((code) => { process.exitCode = code }, (err: unknown) => {
    console.error(err instanceof Error ? err.message : err)
    process.exitCode = 1
  })
}
