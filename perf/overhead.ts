// What fairway's tenancy costs over a bare server: fairway, a bare uWS +
// onnxruntime server (perf/baselines/bare-server.ts) and a node:http one
// (perf/baselines/naive-server.ts), each started as a child process and
// measured alone with the open-loop generator (perf/loadgen.ts):
//
//  (a) saturation: open-loop constant-rate steps, rising geometrically, then
//      bisected; a step passes when >= 99% of the requests it intended got a
//      2xx and the p99 latency (from the intended send time) is within the
//      bound. The saturation rate is the highest passing step.
//  (b) server CPU time per request at a fixed moderate rate: utime+stime of the
//      server process (all its threads) from /proc/<pid>/stat over the
//      measured period, divided by the responses it sent.
//  (c) p50/p99 at that fixed rate.
//
// Batch-1 tiny-classifier requests, JSON; tenant acme for fairway.
// The generator runs on the same machine and competes for its cores; each
// row reports the generator's own CPU so a generator-bound result is visible.
//
// Run: npm run bench:overhead   (node dist/perf/overhead.js [--long] [--help])

import { execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { appendResults, BASELINE_MODEL, machine, median, ROOT, runMain, spawnServer, startBaseline } from './bench-platform.js'
import { cliFail, parseCli } from './cli-args.js'
import { readCpuTicks } from './cpu-steal.js'
import { renderTable, runLoad, type LoadResult, type Scenario } from './loadgen.js'

const USAGE = `usage: node dist/perf/overhead.js [options]
  --servers LIST        comma-separated, from bare,naive,fairway,fairway-ws,fairway-window,
                        fairway-inline (default: bare,naive,fairway; fairway-ws = fairway over
                        WebSocket + MessagePack; fairway-window = fairway over HTTP + JSON with a
                        batching window on the tiny model, see --window-us; fairway-inline =
                        fairway over HTTP + JSON with every class but heavy "runtime": "inline",
                        batches on the gateway thread)
  --window-us N         fairway-window's maxQueueDelayUs for tiny-classifier (default 2000): a free
                        worker waits up to this long for more rows, so at low rates several
                        requests share one dispatch and its cross-thread wake-ups, at the price
                        of about that much added latency
  --fixed-rate N        req/s for the CPU and latency measurement (default 2000)
  --fixed-duration S    measured seconds at the fixed rate (default 10)
  --step-duration S     measured seconds per saturation step (default 3)
  --sweep-start N       first saturation step, req/s (default 1000)
  --sweep-factor F      growth per step until a step fails (default 2)
  --sweep-max N         highest step tried (default 40000)
  --refine N            bisection steps between the last pass and first fail (default 2)
  --p99-ms MS           p99 bound for a passing step (default 50)
  --threads N           generator threads (default 1; the machine's cores are shared with the server)
  --connections N       keep-alive connections per generator thread (default 64)
  --max-noise CORES     repeat a measurement when other processes used more CPU than this (default 0.2)
  --retries N           repeats per measurement for noise (default 1)
  --rounds N            run the whole list of servers N times, interleaved (bare, naive, ..., bare,
                        naive, ...), and report each server's round with the median CPU per request
                        (default 1; 0 skips the rounds, for --pairs alone). The VM's own noise drifts
                        over minutes, invisible to the noise guard; interleaving puts every server
                        through the same drift.
  --pairs N             then measure CPU per request in N paired cycles (default 0: none): every
                        server runs at once, idle but for its own window, and the windows alternate
                        (A B, then B A, ...) at the fixed rate, --pair-duration s each, so servers
                        compared in one cycle are seconds apart, not minutes. A window is charged
                        all the server's CPU until its next window starts (deferred work such as
                        ClickHouse merges included), over the responses in the window; the result
                        is each cycle's ratio against bare, its median and its range.
  --pair-duration S     seconds per paired window (default 12)
  --fairway-config FILE config for fairway (default: its demo platform)
  --key KEY             fairway API key (default acme's demo key)
  --raise-tenant-limits run fairway on a copy of its config with every tenant's ratePerSecond and
                        burst raised to 1e6 and concurrency and queueDepth to at least 4096
                        (perf/out/fairway-raised-limits.json), so the sweep finds
                        the server's ceiling rather than the tenant's rate limit
  --long                fixed 30 s, steps 8 s, refine 3
  --results FILE        append the summary here (default perf/RESULTS.md)
  --no-results          do not write RESULTS.md
  --json FILE           full results (default perf/out/overhead-<time>.json)
  --help                this text`

type ServerName = 'bare' | 'naive' | 'fairway' | 'fairway-ws' | 'fairway-window' | 'fairway-inline'
const SERVER_NAMES: readonly ServerName[] = ['bare', 'naive', 'fairway', 'fairway-ws', 'fairway-window', 'fairway-inline']

/** How the load reaches a server: fairway-ws is fairway over WebSocket + MessagePack. */
interface Transport { protocol: 'http' | 'websocket', encoding: 'json' | 'msgpack' }
const isFairway = (name: ServerName): boolean => name.startsWith('fairway')
const transportOf = (name: ServerName): Transport => name === 'fairway-ws' ? { protocol: 'websocket', encoding: 'msgpack' } : { protocol: 'http', encoding: 'json' }

interface Step {
  rate: number
  pass: boolean
  why: string
  /** Other processes used more than --max-noise cores even after the retries: a failure may be theirs. */
  noisy: boolean
  ok_rate: number
  /** 2xx responses that arrived during the step's measured period, per second. */
  throughput: number
  p50_ms: number
  p99_ms: number
  send_lag_p99_ms: number
  /** Cores' worth of CPU used by the server / the generator during the step. */
  server_cores: number
  generator_cores: number
  other_cores: number
  errors: Record<string, number>
}

interface ServerResult {
  server: ServerName
  label: string
  /** Set when the saturation sweep stopped on a tenant policy (429 tenant rate) rather than capacity. */
  capped_by: string | null
  /** A step above the saturation rate failed while other processes were busy: the rate may be understated. */
  saturation_noisy: boolean
  pid: number
  idle_cpu_ms_per_s: number
  saturation_rate: number
  peak_ok_rate: number
  steps: Step[]
  fixed: {
    rate: number
    ok_rate: number
    responses: number
    errors: number
    cpu_us_per_request: number
    generator_cpu_us_per_request: number
    p50_ms: number
    p90_ms: number
    p99_ms: number
    p999_ms: number
    max_ms: number
    service_p50_ms: number
    service_p99_ms: number
    send_lag_p99_ms: number
    /** Cores' worth of CPU other processes used meanwhile (noise on a shared machine). */
    other_cores: number
    noisy: boolean
  }
  loadgen_fixed: LoadResult
}

const DEMO_KEY = 'fw_demo_acme_premium'

/** One server's window in a paired cycle (--pairs). */
interface PairWindow {
  cycle: number
  server: ServerName
  responses: number
  /** All the server's CPU from this window's start to its next window's start, per response in the window. */
  cpu_us_per_request: number
  /** Only the CPU inside the window, per response. */
  in_window_cpu_us_per_request: number
  other_cores: number
}

function clkTck (): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isFinite(n) && n > 0 ? n : 100
  } catch {
    return 100
  }
}
const CLK_TCK = clkTck()

/** utime + stime of a process (all threads), in ms. */
function cpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // comm (field 2) may contain spaces: split after its closing parenthesis; fields 14, 15 are then at 11, 12.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * 1000 / CLK_TCK
}

/** Busy CPU time of the whole machine (all cores, every process), in ms, from /proc/stat. */
function machineBusyMs (): number {
  const t = readCpuTicks()
  // cpuMs() reads /proc too: this benchmark is Linux-only either way.
  if (t === null) throw new Error('/proc/stat has no aggregate cpu line: bench:overhead needs Linux')
  return (t.total - t.idle) * 1000 / CLK_TCK
}

function selfCpuMs (): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

interface Running {
  child: ChildProcess
  pid: number
  url: string
  output: string[]
}

/** Fairway's config files (undefined: the demo platform); `window` and `inline` are the copies fairway-window and fairway-inline run on. */
interface FairwayConfigs { main: string | undefined, window: string | undefined, inline: string | undefined }

async function startServer (name: ServerName, configs: FairwayConfigs): Promise<Running> {
  const config = name === 'fairway-window' ? configs.window : name === 'fairway-inline' ? configs.inline : configs.main
  const s = isFairway(name)
    ? await spawnServer([...process.execArgv, join(ROOT, 'bin', 'fairway.js'), 'start', '--port', '0', ...(config === undefined ? [] : ['--config', config])], name)
    : await startBaseline(name === 'bare' ? 'bare' : 'naive')
  if (s.proc.pid === undefined) throw new Error(`${name}: no pid`)
  return { child: s.proc, pid: s.proc.pid, url: s.url, output: s.output }
}

async function stopServer (r: Running): Promise<void> {
  if (r.child.exitCode !== null) return
  const exited = new Promise<void>((res) => r.child.once('exit', () => res()))
  r.child.kill('SIGTERM')
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 15_000)
  await exited
  clearTimeout(timer)
}

function inferBody (): string {
  const data = Array.from({ length: 64 }, (_, i) => Math.round(Math.sin(i) * 1e4) / 1e4)
  return JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 64], data }] })
}

/** One request end to end, so a misconfigured server fails loudly before any measurement. */
async function smokeTest (name: ServerName, url: string, key: string | undefined): Promise<void> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (key !== undefined) headers.authorization = `Bearer ${key}`
  const res = await fetch(`${url}/v2/models/tiny-classifier/infer`, { method: 'POST', headers, body: inferBody() })
  const body = await res.text()
  if (res.status !== 200) throw new Error(`${name}: smoke request got HTTP ${res.status}: ${body}`)
  const json = JSON.parse(body) as { outputs?: Array<{ shape?: number[] }> }
  if (JSON.stringify(json.outputs?.[0]?.shape) !== '[1,8]') throw new Error(`${name}: unexpected reply ${body}`)
}

interface Knobs {
  fixedRate: number
  fixedDuration: number
  fixedWarmup: number
  stepDuration: number
  stepWarmup: number
  sweepStart: number
  sweepFactor: number
  sweepMax: number
  refine: number
  p99Ms: number
  threads: number
  connections: number
  /** Cores other processes may use during a measurement before it is repeated. */
  maxNoise: number
  retries: number
  rounds: number
  /** fairway-window's batching window on tiny-classifier, µs. */
  windowUs: number
}

function scenarioFor (url: string, key: string | undefined, rate: number, durationS: number, warmupS: number, k: Knobs, t: Transport): Scenario {
  return {
    target: url,
    duration_s: durationS,
    warmup_s: warmupS,
    threads: k.threads,
    connections: k.connections,
    timeout_ms: 5000,
    seed: 1,
    flows: [{ name: 'tiny', ...(key === undefined ? {} : { key }), model: 'tiny-classifier', rows: 1, rate, arrival: 'constant', ...t }],
  }
}

interface Measured {
  result: LoadResult
  serverCpuMs: number
  generatorCpuMs: number
  /** Machine busy time not used by the server or the generator: other processes (noise). */
  otherCpuMs: number
}

/** A load run with the server's and the generator's CPU time read over the measured period. */
async function measure (pid: number, scenario: Scenario): Promise<Measured> {
  let s0 = 0
  let s1 = 0
  let g0 = 0
  let g1 = 0
  let m0 = 0
  let m1 = 0
  const result = await runLoad(scenario, {
    progress: false,
    onMeasureStart: () => { s0 = cpuMs(pid); g0 = selfCpuMs(); m0 = machineBusyMs() },
    onMeasureEnd: () => { s1 = cpuMs(pid); g1 = selfCpuMs(); m1 = machineBusyMs() },
  })
  return { result, serverCpuMs: s1 - s0, generatorCpuMs: g1 - g0, otherCpuMs: Math.max(0, (m1 - m0) - (s1 - s0) - (g1 - g0)) }
}

function errorSummary (r: LoadResult): Record<string, number> {
  const t = r.total
  const out: Record<string, number> = {}
  for (const [s, n] of Object.entries(t.status)) if (!s.startsWith('2')) out[`HTTP ${s}`] = n
  for (const [c, n] of Object.entries(t.error_codes)) out[c] = n
  for (const [c, n] of Object.entries(t.transport_errors)) out[c] = n
  if (t.dropped > 0) out.dropped = t.dropped
  return out
}

/**
 * Waits (up to maxWaitMs) until other processes use less than maxNoise cores,
 * sampled over one second at a time. Returns false if they never did.
 */
async function waitQuiet (pid: number, maxNoise: number, maxWaitMs: number): Promise<boolean> {
  const until = Date.now() + maxWaitMs
  for (;;) {
    const m0 = machineBusyMs()
    const s0 = cpuMs(pid)
    const g0 = selfCpuMs()
    await new Promise((r) => setTimeout(r, 1000))
    const other = (machineBusyMs() - m0 - (cpuMs(pid) - s0) - (selfCpuMs() - g0)) / 1000
    if (other < maxNoise) return true
    if (Date.now() > until) return false
  }
}

/**
 * measure(), repeated (after waiting for the machine to calm down) while
 * other processes used more than maxNoise cores during the measured period:
 * on a shared machine their CPU use shows up as our latency.
 */
async function measureQuietly (what: string, pid: number, scenario: Scenario, k: Knobs): Promise<Measured & { noisy: boolean }> {
  for (let attempt = 0; ; attempt++) {
    const m = await measure(pid, scenario)
    const other = m.otherCpuMs / (scenario.duration_s * 1000)
    if (other <= k.maxNoise) return { ...m, noisy: false }
    if (attempt >= k.retries) {
      process.stderr.write(`  ${what}: other processes used ${other.toFixed(2)} cores; keeping this noisy result after ${attempt + 1} attempts\n`)
      return { ...m, noisy: true }
    }
    process.stderr.write(`  ${what}: other processes used ${other.toFixed(2)} cores (> ${k.maxNoise}); waiting for quiet and repeating\n`)
    await waitQuiet(pid, k.maxNoise, 15_000)
  }
}

async function runStep (pid: number, url: string, key: string | undefined, rate: number, k: Knobs, transport: Transport): Promise<Step> {
  const m = await measureQuietly(`step ${rate}/s`, pid, scenarioFor(url, key, rate, k.stepDuration, k.stepWarmup, k, transport), k)
  const t = m.result.total
  const p99 = t.latency_us.p99 / 1000
  const why: string[] = []
  if (t.ok < 0.99 * t.intended) why.push(`only ${(100 * t.ok / Math.max(1, t.intended)).toFixed(1)}% 2xx`)
  if (p99 > k.p99Ms) why.push(`p99 ${p99.toFixed(1)} ms > ${k.p99Ms} ms`)
  const step: Step = {
    rate,
    pass: why.length === 0,
    why: why.join(', '),
    noisy: m.noisy,
    ok_rate: t.ok_rate,
    throughput: t.throughput,
    p50_ms: t.latency_us.p50 / 1000,
    p99_ms: p99,
    send_lag_p99_ms: t.send_lag_us.p99 / 1000,
    server_cores: m.serverCpuMs / (k.stepDuration * 1000),
    generator_cores: m.generatorCpuMs / (k.stepDuration * 1000),
    other_cores: m.otherCpuMs / (k.stepDuration * 1000),
    errors: errorSummary(m.result),
  }
  const errs = Object.entries(step.errors).map(([e, n]) => `${e} x${n}`).join(', ')
  process.stderr.write(`  step ${String(rate).padStart(6)}/s: ${step.pass ? 'pass' : 'FAIL'}  2xx ${t.ok_rate.toFixed(0)}/s (in period ${t.throughput.toFixed(0)}/s)  p50 ${step.p50_ms.toFixed(2)} ms  p99 ${p99.toFixed(2)} ms  lag p99 ${step.send_lag_p99_ms.toFixed(2)} ms  server ${step.server_cores.toFixed(2)} cores  generator ${step.generator_cores.toFixed(2)}  other ${step.other_cores.toFixed(2)} cores${step.pass ? '' : `  (${step.why})`}${errs === '' ? '' : `  [${errs}]`}\n`)
  // Let the server drain whatever the step left queued before the next one.
  await new Promise((r) => setTimeout(r, 500))
  return step
}

async function saturation (pid: number, url: string, key: string | undefined, k: Knobs, transport: Transport): Promise<Step[]> {
  const steps: Step[] = []
  let pass = 0
  let fail = 0
  let rate = k.sweepStart
  for (;;) {
    const s = await runStep(pid, url, key, rate, k, transport)
    steps.push(s)
    if (s.pass) {
      pass = rate
      if (rate >= k.sweepMax) break
      rate = Math.min(k.sweepMax, Math.round(rate * k.sweepFactor / 50) * 50)
    } else {
      fail = rate
      if (pass > 0 || rate <= 100) break
      rate = Math.round(rate / 2) // even the first step failed: go down
    }
  }
  for (let i = 0; i < k.refine && pass > 0 && fail > pass; i++) {
    const mid = Math.round((pass + fail) / 2 / 50) * 50
    if (mid <= pass || mid >= fail) break
    const s = await runStep(pid, url, key, mid, k, transport)
    steps.push(s)
    if (s.pass) pass = mid
    else fail = mid
  }
  return steps
}

async function benchServer (name: ServerName, k: Knobs, configs: FairwayConfigs, key: string): Promise<ServerResult> {
  process.stderr.write(`\n${name}: starting\n`)
  const srv = await startServer(name, configs)
  try {
    const k2 = isFairway(name) ? key : undefined
    await smokeTest(name, srv.url, k2)
    // Idle CPU: what the server burns doing nothing (timers, pollers).
    const i0 = cpuMs(srv.pid)
    await new Promise((r) => setTimeout(r, 2000))
    const idle = (cpuMs(srv.pid) - i0) / 2
    process.stderr.write(`${name}: pid ${srv.pid} at ${srv.url}; idle CPU ${idle.toFixed(1)} ms/s\n`)

    // (b) and (c) first, on a warm but never-overloaded server.
    process.stderr.write(`${name}: fixed ${k.fixedRate} req/s for ${k.fixedDuration} s (after ${k.fixedWarmup} s warmup)\n`)
    const m = await measureQuietly('fixed rate', srv.pid, scenarioFor(srv.url, k2, k.fixedRate, k.fixedDuration, k.fixedWarmup, k, transportOf(name)), k)
    const t = m.result.total
    const fixed = {
      rate: k.fixedRate,
      ok_rate: t.ok_rate,
      responses: t.responses,
      errors: t.errors,
      cpu_us_per_request: t.responses === 0 ? NaN : m.serverCpuMs * 1000 / t.responses,
      generator_cpu_us_per_request: t.sent === 0 ? NaN : m.generatorCpuMs * 1000 / t.sent,
      p50_ms: t.latency_us.p50 / 1000,
      p90_ms: t.latency_us.p90 / 1000,
      p99_ms: t.latency_us.p99 / 1000,
      p999_ms: t.latency_us.p999 / 1000,
      max_ms: t.latency_us.max / 1000,
      service_p50_ms: t.service_us.p50 / 1000,
      service_p99_ms: t.service_us.p99 / 1000,
      send_lag_p99_ms: t.send_lag_us.p99 / 1000,
      other_cores: m.otherCpuMs / (k.fixedDuration * 1000),
      noisy: m.noisy,
    }
    process.stderr.write(`${name}: ok ${t.ok_rate.toFixed(0)}/s, errors ${t.errors}, server CPU ${fixed.cpu_us_per_request.toFixed(1)} us/req, p50 ${fixed.p50_ms.toFixed(2)} ms, p99 ${fixed.p99_ms.toFixed(2)} ms\n`)
    await new Promise((r) => setTimeout(r, 1000))

    // (a)
    process.stderr.write(`${name}: saturation sweep (open loop, ${k.stepWarmup}+${k.stepDuration} s per step, pass = >=99% 2xx and p99 <= ${k.p99Ms} ms)\n`)
    const steps = await saturation(srv.pid, srv.url, k2, k, transportOf(name))
    const passing = steps.filter((s) => s.pass)
    const sat = passing.length === 0 ? 0 : Math.max(...passing.map((s) => s.rate))
    // Did the steps above the saturation rate fail on the tenant's rate limit (policy), not capacity?
    const above = steps.filter((s) => !s.pass && s.rate > sat)
    // (errors lists both "HTTP 429" and its code: count the codes, transport errors and drops only.)
    const capped = above.length > 0 && above.every((s) => (s.errors.FW_ERR_ADMISSION_TENANT_RATE ?? 0) > 0.5 * Object.entries(s.errors).filter(([e]) => !e.startsWith('HTTP ')).reduce((a, [, n]) => a + n, 0))
    const raised = configs.main !== undefined && configs.main.endsWith('fairway-raised-limits.json')
    const names: Partial<Record<ServerName, string>> = { bare: 'bare (baseline)', 'fairway-ws': 'fairway WebSocket+MessagePack', 'fairway-window': `fairway, batching window ${k.windowUs} µs`, 'fairway-inline': 'fairway, light classes inline' }
    return {
      server: name,
      label: `${names[name] ?? name}${isFairway(name) && raised ? ' (tenant rate limits raised)' : ''}`,
      capped_by: capped ? 'tenant rate limit (429 FW_ERR_ADMISSION_TENANT_RATE)' : null,
      saturation_noisy: above.some((s) => s.noisy),
      pid: srv.pid,
      idle_cpu_ms_per_s: idle,
      saturation_rate: sat,
      peak_ok_rate: Math.max(...steps.map((s) => s.throughput)),
      steps,
      fixed,
      loadgen_fixed: m.result,
    }
  } finally {
    await stopServer(srv)
  }
}

/**
 * CPU per request in paired cycles: every server is started and kept
 * running, and their fixed-rate windows alternate, the order reversed every
 * other cycle. The VM's speed drifts by tens of percent over minutes (bare
 * measured 90 to 200 µs/request across sessions, 141 to 165 within one), so
 * a ratio of two windows minutes apart carries that drift; two windows
 * seconds apart mostly share it. Charging each window until the server's next
 * window starts counts the work it deferred (cost inserts, merges) and the
 * idle timers in between, which only raises fairway's figure.
 */
async function pairedCpu (servers: readonly ServerName[], k: Knobs, configs: FairwayConfigs, key: string, cycles: number, durationS: number): Promise<PairWindow[]> {
  const running: Running[] = []
  try {
    for (const s of servers) {
      process.stderr.write(`\npaired: starting ${s}\n`)
      const r = await startServer(s, configs)
      running.push(r)
      await smokeTest(s, r.url, isFairway(s) ? key : undefined)
    }
    // Each server with its window still being charged (from cpu0 until its next window starts).
    const entries = servers.map((name, i) => ({ name, r: running[i] as Running, open: null as { w: PairWindow, cpu0: number } | null }))
    const scenario = (e: typeof entries[number], d: number): Scenario => scenarioFor(e.r.url, isFairway(e.name) ? key : undefined, k.fixedRate, d, 0, k, transportOf(e.name))
    const close = (e: typeof entries[number]): void => {
      if (e.open !== null && e.open.w.responses > 0) e.open.w.cpu_us_per_request = (cpuMs(e.r.pid) - e.open.cpu0) * 1000 / e.open.w.responses
    }
    // One unrecorded window each first: JIT, sessions and connections warm.
    for (const e of entries) await runLoad(scenario(e, 5), { progress: false })
    const windows: PairWindow[] = []
    for (let c = 1; c <= cycles; c++) {
      for (const e of c % 2 === 1 ? entries : [...entries].reverse()) {
        close(e)
        const cpu0 = cpuMs(e.r.pid)
        const m = await measure(e.r.pid, scenario(e, durationS))
        const t = m.result.total
        const w: PairWindow = { cycle: c, server: e.name, responses: t.responses, cpu_us_per_request: NaN, in_window_cpu_us_per_request: t.responses === 0 ? NaN : m.serverCpuMs * 1000 / t.responses, other_cores: m.otherCpuMs / (durationS * 1000) }
        windows.push(w)
        e.open = { w, cpu0 }
        process.stderr.write(`  cycle ${c} ${e.name}: ${t.responses} responses, in-window CPU ${f1(w.in_window_cpu_us_per_request)} us/req, other ${f2(w.other_cores)} cores\n`)
      }
    }
    // The last windows are charged over one more window's length, as the others were.
    await new Promise((r) => setTimeout(r, durationS * 1000 * Math.max(1, servers.length - 1)))
    for (const e of entries) close(e)
    return windows
  } finally {
    for (const r of running) await stopServer(r)
  }
}

/** The paired cycles as a table (one row per cycle) and a summary line per server. */
function pairedTable (servers: readonly ServerName[], windows: readonly PairWindow[]): { headers: string[], rows: string[][], summary: string[] } {
  const cycles = [...new Set(windows.map((w) => w.cycle))]
  const get = (c: number, s: ServerName): PairWindow | undefined => windows.find((w) => w.cycle === c && w.server === s)
  const others = servers.filter((s) => s !== 'bare')
  const headers = ['cycle', ...servers.map((s) => `${s} CPU us/req (in window)`), ...others.map((s) => `${s} vs bare`), 'most other cores']
  const rows = cycles.map((c) => [
    String(c),
    ...servers.map((s) => { const w = get(c, s); return w === undefined ? '-' : `${f1(w.cpu_us_per_request)} (${f1(w.in_window_cpu_us_per_request)})` }),
    ...others.map((s) => ratio(get(c, s)?.cpu_us_per_request ?? NaN, get(c, 'bare')?.cpu_us_per_request)),
    f2(Math.max(...windows.filter((w) => w.cycle === c).map((w) => w.other_cores))),
  ])
  const summary = servers.includes('bare')
    ? others.map((s) => {
      const rs = cycles.map((c) => (get(c, s)?.cpu_us_per_request ?? NaN) / (get(c, 'bare')?.cpu_us_per_request ?? NaN)).filter(Number.isFinite)
      const inw = cycles.map((c) => (get(c, s)?.in_window_cpu_us_per_request ?? NaN) / (get(c, 'bare')?.in_window_cpu_us_per_request ?? NaN)).filter(Number.isFinite)
      // Every second of a server's CPU falls in exactly one of its charged windows, so the totals are whole.
      const total = (name: ServerName): number => {
        const ws = windows.filter((w) => w.server === name && Number.isFinite(w.cpu_us_per_request))
        return ws.reduce((a, w) => a + w.cpu_us_per_request * w.responses, 0) / ws.reduce((a, w) => a + w.responses, 0)
      }
      return `${s} vs bare over ${rs.length} cycles: median **${median(rs).toFixed(2)}x** (range ${Math.min(...rs).toFixed(2)}–${Math.max(...rs).toFixed(2)}); all cycles together ${(total(s) / total('bare')).toFixed(2)}x (${f1(total(s))} vs ${f1(total('bare'))} us/req); in-window CPU only: median ${median(inw).toFixed(2)}x`
    })
    : []
  return { headers, rows, summary }
}

interface RawPlatform {
  modelRepository?: string
  tenants?: Record<string, { limits?: Record<string, number> }>
  models?: Record<string, { batching?: Record<string, number> }>
  serviceClasses?: Record<string, Record<string, unknown>>
}

/**
 * Writes perf/out/<name> as a copy of a platform config changed by `edit`
 * (its modelRepository made absolute, since the copy lives elsewhere);
 * returns its path.
 */
function configCopy (file: string, name: string, edit: (raw: RawPlatform) => void): string {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as RawPlatform
  raw.modelRepository = resolve(dirname(file), raw.modelRepository ?? 'models')
  edit(raw)
  const out = join(ROOT, 'perf', 'out', name)
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, JSON.stringify(raw, null, 2) + '\n')
  return out
}

/** A copy of a platform config with every tenant's rate limit out of the way. */
function raisedLimitsConfig (file: string): string {
  return configCopy(file, 'fairway-raised-limits.json', (raw) => {
    for (const t of Object.values(raw.tenants ?? {})) {
      if (t.limits === undefined) continue
      t.limits.ratePerSecond = 1_000_000
      t.limits.burst = 1_000_000
      // WebSocket clients keep more in flight than HTTP's one per connection.
      t.limits.concurrency = Math.max(t.limits.concurrency ?? 0, 4096)
      t.limits.queueDepth = Math.max(t.limits.queueDepth ?? 0, 4096)
    }
  })
}

/** A copy of a platform config in which tiny-classifier has a batching window of `windowUs`. */
function windowConfig (file: string, windowUs: number): string {
  return configCopy(file, 'fairway-window.json', (raw) => {
    const model = raw.models?.['tiny-classifier']
    if (model === undefined) throw new Error(`${file} has no tiny-classifier model for fairway-window`)
    model.batching = { ...model.batching, maxQueueDelayUs: windowUs }
  })
}

/** A copy of a platform config in which every service class but `heavy` runs inline on the gateway thread. */
function inlineConfig (file: string): string {
  return configCopy(file, 'fairway-inline.json', (raw) => {
    for (const [id, sc] of Object.entries(raw.serviceClasses ?? {})) {
      if (id === 'heavy') continue
      // What a worker pool has and an inline class may not.
      for (const key of ['cpus', 'workers', 'nice', 'lendTo', 'device', 'deviceId']) Reflect.deleteProperty(sc, key)
      sc.runtime = 'inline'
    }
  })
}

function f1 (x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : '-'
}

function f2 (x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : '-'
}

function ratio (x: number, base: number | undefined): string {
  return base === undefined || !(base > 0) || !Number.isFinite(x) ? '-' : `${(x / base).toFixed(2)}x`
}

function tableRows (results: ServerResult[]): { headers: string[], rows: string[][] } {
  const bare = results.find((r) => r.server === 'bare')
  const naive = results.find((r) => r.server === 'naive')
  const headers = ['server', 'saturation req/s', 'vs bare', 'peak 2xx/s', 'CPU us/req', 'vs bare', 'vs naive', 'p50 ms', 'p99 ms', 'p99.9 ms', 'svc p50 ms', 'svc p99 ms', 'gen lag p99 ms', 'gen CPU us/req', 'idle CPU ms/s', 'other cores']
  const rows = results.map((r) => [
    r.fixed.noisy ? `${r.label} (noisy)` : r.label,
    `${r.saturation_rate}${r.capped_by === null ? '' : ' (tenant rate cap)'}${r.saturation_noisy ? ' (noisy)' : ''}`, ratio(r.saturation_rate, bare?.saturation_rate), r.peak_ok_rate.toFixed(0),
    f1(r.fixed.cpu_us_per_request), ratio(r.fixed.cpu_us_per_request, bare?.fixed.cpu_us_per_request), ratio(r.fixed.cpu_us_per_request, naive?.fixed.cpu_us_per_request),
    f2(r.fixed.p50_ms), f2(r.fixed.p99_ms), f2(r.fixed.p999_ms), f2(r.fixed.service_p50_ms), f2(r.fixed.service_p99_ms),
    f2(r.fixed.send_lag_p99_ms), f1(r.fixed.generator_cpu_us_per_request), f1(r.idle_cpu_ms_per_s), f2(r.fixed.other_cores),
  ])
  return { headers, rows }
}

function markdownTable (headers: string[], rows: string[][]): string {
  return [`| ${headers.join(' | ')} |`, `|${headers.map((_, i) => i === 0 ? '---' : '---:').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
}


async function main (): Promise<number> {
  const { values } = parseCli(USAGE, {
    servers: { type: 'string', default: 'bare,naive,fairway' },
    'fixed-rate': { type: 'string' },
    'fixed-duration': { type: 'string' },
    'step-duration': { type: 'string' },
    'sweep-start': { type: 'string' },
    'sweep-factor': { type: 'string' },
    'sweep-max': { type: 'string' },
    refine: { type: 'string' },
    'p99-ms': { type: 'string' },
    threads: { type: 'string' },
    connections: { type: 'string' },
    'max-noise': { type: 'string' },
    retries: { type: 'string' },
    rounds: { type: 'string' },
    pairs: { type: 'string' },
    'pair-duration': { type: 'string' },
    'window-us': { type: 'string' },
    'fairway-config': { type: 'string' },
    'raise-tenant-limits': { type: 'boolean', default: false },
    key: { type: 'string' },
    long: { type: 'boolean', default: false },
    results: { type: 'string' },
    'no-results': { type: 'boolean', default: false },
    json: { type: 'string' },
  })
  const num = (v: string | undefined, d: number): number => {
    if (v === undefined) return d
    const n = Number(v)
    if (!Number.isFinite(n) || n <= 0) cliFail(USAGE, `bad number ${v}`)
    return n
  }
  /** Counts that may be 0 (no bisection, no retry): whole numbers >= 0. */
  const count = (v: string | undefined, d: number): number => {
    if (v === undefined) return d
    const n = Number(v)
    if (!Number.isInteger(n) || n < 0) cliFail(USAGE, `bad count ${v} (a whole number >= 0)`)
    return n
  }
  const long = values.long
  const k: Knobs = {
    fixedRate: num(values['fixed-rate'], 2000),
    fixedDuration: num(values['fixed-duration'], long ? 30 : 10),
    fixedWarmup: 2,
    stepDuration: num(values['step-duration'], long ? 8 : 3),
    stepWarmup: 1,
    sweepStart: num(values['sweep-start'], 1000),
    sweepFactor: num(values['sweep-factor'], 2),
    sweepMax: num(values['sweep-max'], 40_000),
    refine: count(values.refine, long ? 3 : 2),
    p99Ms: num(values['p99-ms'], 50),
    threads: num(values.threads, 1),
    connections: num(values.connections, 64),
    maxNoise: num(values['max-noise'], 0.2),
    retries: count(values.retries, 1),
    rounds: count(values.rounds, 1),
    windowUs: Math.floor(num(values['window-us'], 2000)),
  }
  const pairs = count(values.pairs, 0)
  const pairDuration = num(values['pair-duration'], 12)
  if (k.rounds === 0 && pairs === 0) cliFail(USAGE, 'nothing to measure: --rounds 0 needs --pairs N')
  const servers = values.servers.split(',').map((s) => s.trim()) as ServerName[]
  for (const s of servers) if (!SERVER_NAMES.includes(s)) cliFail(USAGE, `unknown server ${s}`)
  if (!existsSync(BASELINE_MODEL)) throw new Error(`${BASELINE_MODEL} is missing: run npm run build`)
  let fairwayConfig = values['fairway-config'] === undefined ? undefined : resolve(values['fairway-config'])
  if (values['raise-tenant-limits']) fairwayConfig = raisedLimitsConfig(fairwayConfig ?? join(ROOT, 'config', 'demo-platform.json'))
  const key = values.key ?? DEMO_KEY
  // Written only when asked for: another config need not have tiny-classifier.
  const base = fairwayConfig ?? join(ROOT, 'config', 'demo-platform.json')
  const configs: FairwayConfigs = {
    main: fairwayConfig,
    window: servers.includes('fairway-window') ? windowConfig(base, k.windowUs) : undefined,
    inline: servers.includes('fairway-inline') ? inlineConfig(base) : undefined,
  }

  const started = new Date()
  const t0 = Date.now()
  const rounds: ServerResult[][] = servers.map(() => [])
  for (let round = 1; round <= k.rounds; round++) {
    if (k.rounds > 1) console.log(`\n== round ${round} of ${k.rounds}`)
    for (const [i, s] of servers.entries()) rounds[i]?.push(await benchServer(s, k, configs, key))
  }
  // Each server's round with the median CPU per request stands for it.
  const results = k.rounds === 0 ? [] : rounds.map((rs) => [...rs].sort((a, b) => a.fixed.cpu_us_per_request - b.fixed.cpu_us_per_request)[Math.floor((rs.length - 1) / 2)] as ServerResult)
  const paired = pairs === 0 ? [] : await pairedCpu(servers, k, configs, key, pairs, pairDuration)
  const pt = pairedTable(servers, paired)
  const elapsed = (Date.now() - t0) / 1000

  const { headers, rows } = tableRows(results)
  const command = `node ${relative(ROOT, fileURLToPath(import.meta.url)).replace(/\.ts$/, '.js').replace(/^perf\//, 'dist/perf/')}${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}`
  const setup = [
    `machine: ${machine()}; Node ${process.version}; ${started.toISOString()}; took ${elapsed.toFixed(0)} s`,
    `command: ${command}`,
    `load: POST /v2/models/tiny-classifier/infer, 1 row, JSON, constant-rate open loop from ${k.threads} generator thread(s) x ${k.connections} connections on the same machine (fairway-ws: WebSocket + MessagePack, 4 connections per thread)${servers.some(isFairway) ? `; fairway tenant key ${key === DEMO_KEY ? 'acme (demo)' : '(custom)'}, config ${fairwayConfig ?? 'demo platform'}` : ''}${configs.window === undefined ? '' : `; fairway-window: ${relative(ROOT, configs.window)} (tiny-classifier maxQueueDelayUs ${k.windowUs})`}${configs.inline === undefined ? '' : `; fairway-inline: ${relative(ROOT, configs.inline)} (every class but heavy inline)`}`,
    ...(k.rounds === 0 ? [] : [`fixed rate: ${k.fixedRate} req/s, ${k.fixedDuration} s after ${k.fixedWarmup} s warmup; latency from intended send time; CPU = server utime+stime (/proc/<pid>/stat, all threads) / responses`,
    `saturation: steps from ${k.sweepStart} req/s x${k.sweepFactor}, ${k.refine} bisection step(s), ${k.stepWarmup}+${k.stepDuration} s each; pass = >=99% of intended requests 2xx and p99 <= ${k.p99Ms} ms`,
    `noise guard: a measurement during which other processes used > ${k.maxNoise} cores is repeated (up to ${k.retries} times) after the machine quietens`]),
    ...(pairs === 0 ? [] : [`paired CPU: ${pairs} cycles of ${pairDuration} s windows at ${k.fixedRate} req/s, all servers running, order reversed every other cycle; a window is charged the server's CPU (utime+stime, all threads) until its next window starts, over the window's responses (in parentheses: the window's own CPU only); no repeats for noise, the most other processes used in a cycle is shown`]),
    ...(k.rounds > 1
      ? [`rounds: ${k.rounds}, servers interleaved; each row is the server's round with the median CPU per request. All rounds: ${servers.map((s, i) => `${s} CPU us/req ${(rounds[i] ?? []).map((r) => r.fixed.cpu_us_per_request.toFixed(1)).join(' / ')}, saturation ${(rounds[i] ?? []).map((r) => r.saturation_rate).join(' / ')}`).join('; ')}`]
      : []),
  ]
  console.log('\n' + setup.join('\n'))
  if (results.length > 0) console.log(renderTable(headers, rows))
  if (paired.length > 0) {
    console.log('\npaired CPU cycles:')
    console.log(renderTable(pt.headers, pt.rows))
    for (const l of pt.summary) console.log(l.replace(/\*\*/g, ''))
  }
  for (const r of results) {
    console.log(`\n${r.label} saturation steps${r.capped_by === null ? '' : `; stopped by the ${r.capped_by}, not capacity`}:`)
    console.log(renderTable(['rate', 'result', '2xx/s', 'in period/s', 'p50 ms', 'p99 ms', 'lag p99 ms', 'server cores', 'generator cores', 'other cores', 'errors'], r.steps.map((s) => [
      String(s.rate), `${s.pass ? 'pass' : `FAIL (${s.why})`}${s.noisy ? ' [noisy]' : ''}`, s.ok_rate.toFixed(0), s.throughput.toFixed(0), f2(s.p50_ms), f2(s.p99_ms), f2(s.send_lag_p99_ms), f2(s.server_cores), f2(s.generator_cores), f2(s.other_cores),
      Object.entries(s.errors).map(([e, n]) => `${e} x${n}`).join(', ') || '-',
    ]), (c) => c !== 1 && c !== 10))
  }

  const jsonOut = values.json ?? join(ROOT, 'perf', 'out', `overhead-${started.toISOString().replace(/[:.]/g, '-')}.json`)
  mkdirSync(dirname(jsonOut), { recursive: true })
  writeFileSync(jsonOut, JSON.stringify({ started_at: started.toISOString(), machine: machine(), node: process.version, command, knobs: k, results, paired }, null, 2) + '\n')
  console.log(`\nfull results: ${relative(process.cwd(), jsonOut)}`)

  if (!values['no-results']) {
    const file = values.results ?? join(ROOT, 'perf', 'RESULTS.md')
    const header = existsSync(file) ? '' : '# Performance results\n\nAppended by `npm run bench:overhead` (perf/overhead.ts). Newest last.\n'
    const steps = results.map((r) => `- ${r.label}${r.capped_by === null ? '' : ` (stopped by the ${r.capped_by})`}: ${r.steps.map((s) => `${s.rate} ${s.pass ? 'pass' : 'FAIL'}${s.noisy ? ' [noisy]' : ''} (2xx ${s.ok_rate.toFixed(0)}/s, in period ${s.throughput.toFixed(0)}/s, p99 ${f1(s.p99_ms)} ms${s.pass ? '' : `; ${s.why}`}${Object.keys(s.errors).length === 0 ? '' : `; ${Object.entries(s.errors).map(([e, n]) => `${e} x${n}`).join(', ')}`})`).join('; ')}`)
    const section = [
      header,
      `## Overhead vs baselines, ${started.toISOString()}`,
      '',
      ...setup.map((l) => `- ${l.replace(/^command: (.*)$/, 'command: `$1`')}`),
      '',
      ...(results.length === 0 ? [] : [
        markdownTable(headers, rows),
        '',
        'Columns: saturation = highest passing open-loop step; peak 2xx/s = most 2xx responses per second that arrived within the measured period of a step (overloaded steps included); CPU us/req, p50/p99/p99.9 = at the fixed rate, latency from the intended send time; svc = from when the request was written to a connection (what a closed-loop tool would report); gen = the load generator (same machine); other cores = CPU used by other processes meanwhile (noise).',
        '',
        'Saturation steps:',
        '',
        ...steps,
        '',
      ]),
      ...(paired.length === 0 ? [] : [
        'Paired CPU cycles:',
        '',
        markdownTable(pt.headers, pt.rows),
        '',
        ...pt.summary.map((l) => `- ${l}`),
        '',
      ]),
    ].join('\n')
    appendResults(file, section)
  }
  return 0
}

runMain(main)
