// Fairness benchmarks (issue #3), against a real fairway started as a child
// process with a benchmark platform config, driven by the open-loop load
// generator (perf/loadgen.ts). Every figure is a ratio against a baseline run
// in the same script, or a share against the configured weight.
//
//   noisy neighbour  victims within quota; an aggressor at 10x its quota;
//                    phases alone / with aggressor / alone, repeated
//   weighted shares  three tenants (weights 1, 2, 4) saturating one class
//   heavy vs light   small-model latency with the heavy class idle vs saturated
//   batching         small-model saturation throughput with / without batching
//
// Run: npm run bench:fairness [-- --phase-s 6 --repeats 3 --out perf/out/fairness.json]

import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { ADMIN, platform, ROOT, startFairway, stop, type Server } from './bench-platform.js'
import { runLoad, type FlowSpec, type LoadResult, type Scenario } from './loadgen.js'

const { values: args } = parseArgs({
  options: {
    'phase-s': { type: 'string', default: '6' },
    repeats: { type: 'string', default: '3' },
    out: { type: 'string', default: join(ROOT, 'perf', 'out', 'fairness.json') },
    only: { type: 'string' },
    cost: { type: 'string', default: 'on' },
  },
})
const PHASE_S = Number(args['phase-s'])
const REPEATS = Number(args.repeats)

async function metrics (s: Server): Promise<string> {
  const r = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })
  return await r.text()
}

function metric (text: string, name: string, labels: string): number {
  const m = new RegExp(`^${name}\\{${labels.replace(/[{}"]/g, (c) => '\\' + c)}\\} ([0-9.e+-]+)$`, 'm').exec(text)
  return m?.[1] === undefined ? NaN : Number(m[1])
}

function flow (name: string, key: string, model: string, rate: number, rows = 1): FlowSpec {
  return { name, tenant: name, key: `${key}`, model, rows, rate, arrival: 'poisson', protocol: 'http', encoding: 'json' }
}

// Connections are plentiful so one flow's slow requests never make another
// flow's requests wait for a free connection inside the generator (which
// would be measured as server latency).
function scenario (url: string, flows: FlowSpec[], durationS = PHASE_S, connections = 1024): Scenario {
  return { target: url, duration_s: durationS, warmup_s: 1, threads: 1, connections, timeout_ms: 30_000, seed: 11, flows }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN }
const tenantOf = (r: LoadResult, name: string) => r.tenants.find((t) => t.name === name)
const quiet = { progress: false }

async function noisyNeighbour (s: Server): Promise<Record<string, unknown>> {
  const victims = [flow('v1', 'fw_bench_v1', 'tiny-classifier', 300), flow('v2', 'fw_bench_v2', 'tiny-classifier', 300)]
  const aggressor = flow('noisy', 'fw_bench_noisy', 'tiny-classifier', 3000) // 10x its 300/s quota
  const reps: Array<Record<string, number>> = []
  for (let i = 0; i < REPEATS; i++) {
    const before = await runLoad(scenario(s.url, victims), quiet)
    // The aggressor is another client: its own generator thread, so its
    // 3,000 sends/s do not delay the victims' sends inside one event loop
    // (that lag would be charged to the victims as latency). Both runs start
    // together and measure the same period.
    const [during, aggr] = await Promise.all([runLoad(scenario(s.url, victims), quiet), runLoad(scenario(s.url, [aggressor]), quiet)])
    const after = await runLoad(scenario(s.url, victims), quiet)
    const p = (r: LoadResult, q: 'p50' | 'p99'): number => Math.max(tenantOf(r, 'v1')?.latency_us[q] ?? NaN, tenantOf(r, 'v2')?.latency_us[q] ?? NaN)
    const alone = (q: 'p50' | 'p99'): number => (p(before, q) + p(after, q)) / 2
    const svc = (r: LoadResult): number => Math.max(tenantOf(r, 'v1')?.service_us.p99 ?? NaN, tenantOf(r, 'v2')?.service_us.p99 ?? NaN)
    const agg = tenantOf(aggr, 'noisy')
    reps.push({
      victim_p50_alone_us: alone('p50'),
      victim_p99_alone_us: alone('p99'),
      victim_p50_with_us: p(during, 'p50'),
      victim_p99_with_us: p(during, 'p99'),
      // How late the generator itself sent victim requests (part of their latency).
      victim_send_lag_p99_alone_us: Math.max(tenantOf(before, 'v1')?.send_lag_us.p99 ?? NaN, tenantOf(after, 'v1')?.send_lag_us.p99 ?? NaN),
      victim_send_lag_p99_with_us: tenantOf(during, 'v1')?.send_lag_us.p99 ?? NaN,
      // Latency from the moment the request was written to its connection:
      // the server's part without the generator's own send lag.
      victim_service_p99_alone_us: (svc(before) + svc(after)) / 2,
      victim_service_p99_with_us: svc(during),
      service_p99_ratio: svc(during) / ((svc(before) + svc(after)) / 2),
      p50_ratio: p(during, 'p50') / alone('p50'),
      p99_ratio: p(during, 'p99') / alone('p99'),
      victim_errors: [before, during, after].reduce((n, r) => n + (tenantOf(r, 'v1')?.errors ?? 0) + (tenantOf(r, 'v2')?.errors ?? 0), 0),
      aggressor_sent: agg?.sent ?? 0,
      aggressor_ok: agg?.ok ?? 0,
      aggressor_rejected_429: agg?.status['429'] ?? 0,
      aggressor_client_reject_p50_us: agg?.error_latency_us.p50 ?? NaN,
      aggressor_client_reject_p99_us: agg?.error_latency_us.p99 ?? NaN,
    })
  }
  const m = await metrics(s)
  return {
    repetitions: reps,
    median_p50_ratio: median(reps.map((r) => r.p50_ratio ?? NaN)),
    median_p99_ratio: median(reps.map((r) => r.p99_ratio ?? NaN)),
    p99_ratio_spread: [Math.min(...reps.map((r) => r.p99_ratio ?? NaN)), Math.max(...reps.map((r) => r.p99_ratio ?? NaN))],
    median_service_p99_ratio: median(reps.map((r) => r.service_p99_ratio ?? NaN)),
    victim_errors_total: reps.reduce((n, r) => n + (r.victim_errors ?? 0), 0),
    server_refusal_p50_us: metric(m, 'fairway_admission_refusal_seconds', 'quantile="0.5"') * 1e6,
    server_refusal_p99_us: metric(m, 'fairway_admission_refusal_seconds', 'quantile="0.99"') * 1e6,
    server_refusals: Number(/^fairway_admission_refusal_seconds_count (\d+)$/m.exec(m)?.[1] ?? NaN),
    aggressor_refused_by_reason: { tenant_rate: metric(m, 'fairway_tenant_rejected_total', 'tenant="noisy",reason="tenant_rate"') },
  }
}

async function weightedShares (s: Server): Promise<Record<string, unknown>> {
  // 8-row requests at 700/s each: 5,600 rows/s per tenant, above every
  // tenant's weighted share of what the class serves, so all stay backlogged.
  const OFFER = 700
  const flows = [flow('w1', 'fw_bench_w1', 'heavy-encoder', OFFER, 8), flow('w2', 'fw_bench_w2', 'heavy-encoder', OFFER, 8), flow('w4', 'fw_bench_w4', 'heavy-encoder', OFFER, 8)]
  const r = await runLoad(scenario(s.url, flows, PHASE_S * 2), quiet)
  const ok = flows.map((f) => tenantOf(r, f.name)?.ok ?? 0)
  const total = ok.reduce((a, b) => a + b, 0)
  const weights = [1, 2, 4]
  const fair = maxMinShares(weights, flows.map((f) => f.rate * r.duration_s), total)
  return {
    offered_per_tenant_rps: OFFER,
    rows_per_request: 8,
    served_rps_total: total / r.duration_s,
    rows: flows.map((f, i) => {
      const share = (ok[i] ?? 0) / total
      const want = (fair[i] ?? 0) / total
      const t = tenantOf(r, f.name)
      return { tenant: f.name, weight: weights[i], served: ok[i], share, weighted_max_min_share: want, relative_error: (share - want) / want, refused: t?.status['429'] ?? 0, dropped_by_generator: t?.dropped ?? 0 }
    }),
  }
}

/** Weighted max-min fair allocation of `capacity` among demands (water-filling). */
function maxMinShares (weights: number[], demands: number[], capacity: number): number[] {
  const alloc = weights.map(() => 0)
  let left = capacity
  let active = weights.map((_, i) => i)
  while (active.length > 0 && left > 1e-9) {
    const wsum = active.reduce((s, i) => s + (weights[i] ?? 0), 0)
    const per = left / wsum
    const capped = active.filter((i) => (demands[i] ?? 0) - (alloc[i] ?? 0) <= per * (weights[i] ?? 0))
    if (capped.length === 0) {
      for (const i of active) alloc[i] = (alloc[i] ?? 0) + per * (weights[i] ?? 0)
      break
    }
    for (const i of capped) { left -= (demands[i] ?? 0) - (alloc[i] ?? 0); alloc[i] = demands[i] ?? 0 }
    active = active.filter((i) => !capped.includes(i))
  }
  return alloc
}

async function heavyVsLight (s: Server): Promise<Record<string, unknown>> {
  const light = [flow('v1', 'fw_bench_v1', 'tiny-classifier', 300)]
  const heavy = flow('w4', 'fw_bench_w4', 'heavy-encoder', 1000)
  const reps: Array<Record<string, number>> = []
  for (let i = 0; i < REPEATS; i++) {
    const idle = await runLoad(scenario(s.url, light), quiet)
    const busy = await runLoad(scenario(s.url, [...light, heavy]), quiet)
    const pi = tenantOf(idle, 'v1')?.latency_us.p99 ?? NaN
    const pb = tenantOf(busy, 'v1')?.latency_us.p99 ?? NaN
    reps.push({ light_p99_heavy_idle_us: pi, light_p99_heavy_saturated_us: pb, ratio: pb / pi, heavy_ok_rps: tenantOf(busy, 'w4')?.ok_rate ?? NaN })
  }
  return { repetitions: reps, median_ratio: median(reps.map((r) => r.ratio ?? NaN)) }
}

async function batching (configFile: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const [label, extra] of [['batching on', []], ['batching off', ['--no-batching']]] as Array<[string, string[]]>) {
    const s = await startFairway(configFile, extra)
    try {
      const r = await runLoad(scenario(s.url, [flow('big', 'fw_bench_big', 'tiny-classifier', 20_000)], PHASE_S, 256), quiet)
      const t = tenantOf(r, 'big')
      out[label] = { offered_rps: 20_000, ok_rps: t?.ok_rate ?? NaN, p50_us: t?.latency_us.p50 ?? NaN, p99_us: t?.latency_us.p99 ?? NaN, errors: t?.errors ?? NaN }
    } finally {
      await stop(s)
    }
  }
  const on = out['batching on'] as { ok_rps: number }
  const off = out['batching off'] as { ok_rps: number }
  out.throughput_ratio_on_vs_off = on.ok_rps / off.ok_rps
  return out
}

const configFile = join(ROOT, 'perf', 'out', 'fairness-platform.json')
mkdirSync(dirname(configFile), { recursive: true })
writeFileSync(configFile, JSON.stringify(platform(undefined, args.cost !== 'off'), null, 2))
// Heavy vs light also runs with the gateway thread pinned to the light CPU:
// unpinned, the kernel often runs it next to the saturated heavy worker.
const pinnedConfigFile = join(ROOT, 'perf', 'out', 'fairness-platform-pinned.json')
writeFileSync(pinnedConfigFile, JSON.stringify(platform([1], args.cost !== 'off'), null, 2))
const results: Record<string, unknown> = { date: new Date().toISOString(), phase_s: PHASE_S, repeats: REPEATS, cost_events: args.cost }
const want = (name: string): boolean => args.only === undefined || args.only.split(',').includes(name)
const server = await startFairway(configFile)
try {
  if (want('noisy')) { results.noisy_neighbour = await noisyNeighbour(server); console.error('noisy neighbour done') }
  if (want('weights')) { results.weighted_shares = await weightedShares(server); console.error('weighted shares done') }
  if (want('heavy')) { results.heavy_vs_light_gateway_unpinned = await heavyVsLight(server); console.error('heavy vs light (unpinned) done') }
} finally {
  await stop(server)
}
if (want('heavy')) {
  const pinned = await startFairway(pinnedConfigFile)
  try {
    results.heavy_vs_light_gateway_pinned = await heavyVsLight(pinned)
  } finally {
    await stop(pinned)
  }
}
if (want('batching')) results.batching = await batching(configFile)
mkdirSync(dirname(args.out), { recursive: true })
writeFileSync(args.out, JSON.stringify(results, null, 2))
console.log(JSON.stringify(results, null, 2))
