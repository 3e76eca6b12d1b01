// Fairness benchmarks (issue #3), against a real fairway started as a child
// process with a benchmark platform config, driven by the open-loop load
// generator (perf/loadgen.ts). Every figure is a ratio against a baseline run
// in the same script, or a share against the configured weight.
//
//   noisy neighbour  victims within quota; an aggressor at 10x its quota;
//                    phases alone / aggressor on a separate refusing process
//                    (the machine's floor) / aggressor on fairway / alone, repeated
//   weighted shares  three tenants (weights 1, 2, 4) saturating one class
//   heavy vs light   small-model latency with the heavy class idle vs saturated
//   batching         small-model saturation throughput with / without batching
//
// Run: npm run bench:fairness [-- --phase-s 6 --repeats 3 --only noisy,weights,heavy,batching
//        --cost on|off --background-nice N --inline --out perf/out/fairness.json --results perf/RESULTS.md|none]
// Appends its headline figures to perf/RESULTS.md.

import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { ADMIN, median, platform, ROOT, startBaseline, startFairway, stop, type Server } from './bench-platform.js'
import { cliChoice, cliNumber, parseCli } from './cli-args.js'
import { runLoad, type FlowSpec, type LoadResult, type Scenario } from './loadgen.js'

const USAGE = `usage: node dist/perf/bench-fairness.js [options]   (npm run bench:fairness -- [options])
  --phase-s S           seconds per load phase (default 6)
  --repeats N           noisy-neighbour repetitions; the median ratio is reported (default 3)
  --only LIST           comma-separated from noisy,weights,heavy,batching (default: all)
  --cost on|off         cost events in the server under test (default on)
  --background-nice N   server.backgroundNice of the server under test (default: the server's own, 10)
  --inline              the light class runs "runtime": "inline" (batches on the gateway thread)
  --out FILE            JSON results (default perf/out/fairness.json)
  --results FILE|none   where the headline figures are appended (default perf/RESULTS.md)
  --help                this text`

const { values: args } = parseCli(USAGE, {
  'phase-s': { type: 'string', default: '6' },
  repeats: { type: 'string', default: '3' },
  out: { type: 'string', default: join(ROOT, 'perf', 'out', 'fairness.json') },
  only: { type: 'string' },
  cost: { type: 'string', default: 'on' },
  'background-nice': { type: 'string' },
  inline: { type: 'boolean', default: false },
  results: { type: 'string', default: join(ROOT, 'perf', 'RESULTS.md') },
})
const PHASE_S = cliNumber(USAGE, 'phase-s', args['phase-s'], 1)
const REPEATS = cliNumber(USAGE, 'repeats', args.repeats, 1)
const COST = cliChoice(USAGE, 'cost', args.cost, ['on', 'off'])
const ONLY = args.only?.split(',').map((n) => cliChoice(USAGE, 'only', n, ['noisy', 'weights', 'heavy', 'batching']))

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

const tenantOf = (r: LoadResult, name: string) => r.tenants.find((t) => t.name === name)
const quiet = { progress: false }

async function noisyNeighbour (s: Server): Promise<Record<string, unknown>> {
  const victims = [flow('v1', 'fw_bench_v1', 'tiny-classifier', 300), flow('v2', 'fw_bench_v2', 'tiny-classifier', 300)]
  const aggressor = flow('noisy', 'fw_bench_noisy', 'tiny-classifier', 3000) // 10x its 300/s quota
  // The floor: the same aggressor against another process that refuses
  // every request as cheaply as this stack can (bare-server --refuse). What
  // that does to the victims is what the aggressor's traffic costs this
  // machine (its generator thread, the loopback stack, the refusals
  // themselves) before fairway's isolation is involved at all.
  const refuser = await startBaseline('bare', ['--refuse'])
  const reps: Array<Record<string, number>> = []
  try {
    for (let i = 0; i < REPEATS; i++) {
      const before = await runLoad(scenario(s.url, victims), quiet)
      // The aggressor is another client: its own generator thread, so its
      // 3,000 sends/s do not delay the victims' sends inside one event loop
      // (that lag would be charged to the victims as latency). Both runs start
      // together and measure the same period.
      const [floor] = await Promise.all([runLoad(scenario(s.url, victims), quiet), runLoad(scenario(refuser.url, [aggressor]), quiet)])
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
        victim_p99_floor_us: p(floor, 'p99'),
        floor_p99_ratio: p(floor, 'p99') / alone('p99'),
        victim_errors: [before, floor, during, after].reduce((n, r) => n + (tenantOf(r, 'v1')?.errors ?? 0) + (tenantOf(r, 'v2')?.errors ?? 0), 0),
        aggressor_sent: agg?.sent ?? 0,
        aggressor_ok: agg?.ok ?? 0,
        aggressor_rejected_429: agg?.status['429'] ?? 0,
        aggressor_client_reject_p50_us: agg?.error_latency_us.p50 ?? NaN,
        aggressor_client_reject_p99_us: agg?.error_latency_us.p99 ?? NaN,
        // The host's share of the phases (perf/cpu-steal.ts): a ratio taken
        // across phases with different steal compares two machines.
        steal_alone_pct: ((before.machine_steal_pct ?? NaN) + (after.machine_steal_pct ?? NaN)) / 2,
        steal_with_pct: during.machine_steal_pct ?? NaN,
      })
    }
  } finally {
    await stop(refuser)
  }
  const m = await metrics(s)
  return {
    repetitions: reps,
    median_p50_ratio: median(reps.map((r) => r.p50_ratio ?? NaN)),
    median_p99_ratio: median(reps.map((r) => r.p99_ratio ?? NaN)),
    p99_ratio_spread: [Math.min(...reps.map((r) => r.p99_ratio ?? NaN)), Math.max(...reps.map((r) => r.p99_ratio ?? NaN))],
    median_service_p99_ratio: median(reps.map((r) => r.service_p99_ratio ?? NaN)),
    median_floor_p99_ratio: median(reps.map((r) => r.floor_p99_ratio ?? NaN)),
    median_p99_ratio_over_floor: median(reps.map((r) => (r.p99_ratio ?? NaN) / (r.floor_p99_ratio ?? NaN))),
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
    // The heavy tenant is another client with its own generator thread (see noisyNeighbour).
    const [busy] = await Promise.all([runLoad(scenario(s.url, light), quiet), runLoad(scenario(s.url, [heavy]), quiet)])
    const pi = tenantOf(idle, 'v1')?.latency_us.p99 ?? NaN
    const pb = tenantOf(busy, 'v1')?.latency_us.p99 ?? NaN
    reps.push({ light_p99_heavy_idle_us: pi, light_p99_heavy_saturated_us: pb, ratio: pb / pi, steal_idle_pct: idle.machine_steal_pct ?? NaN, steal_saturated_pct: busy.machine_steal_pct ?? NaN })
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
const backgroundNice = args['background-nice'] === undefined ? undefined : cliNumber(USAGE, 'background-nice', args['background-nice'], -20)
const lightRuntime = args.inline ? 'inline' : 'workers'
writeFileSync(configFile, JSON.stringify(platform(undefined, COST === 'on', backgroundNice, lightRuntime), null, 2))
// Heavy vs light also runs with the gateway thread pinned to the light CPU:
// unpinned, the kernel often runs it next to the saturated heavy worker.
const pinnedConfigFile = join(ROOT, 'perf', 'out', 'fairness-platform-pinned.json')
writeFileSync(pinnedConfigFile, JSON.stringify(platform([1], COST === 'on', backgroundNice, lightRuntime), null, 2))
const results: Record<string, unknown> = { date: new Date().toISOString(), phase_s: PHASE_S, repeats: REPEATS, cost_events: COST, background_nice: backgroundNice ?? 'default' }
const want = (name: 'noisy' | 'weights' | 'heavy' | 'batching'): boolean => ONLY === undefined || ONLY.includes(name)
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
if (args.results !== 'none') appendFileSync(args.results, resultsSection(results))

/** The perf/RESULTS.md section: the headline figures of each part that ran. */
function resultsSection (r: Record<string, unknown>): string {
  type Reps = { repetitions: Array<Record<string, number>> } & Record<string, unknown>
  const ms = (us: number | undefined): string => ((us ?? NaN) / 1000).toFixed(2)
  const x2 = (v: unknown): string => typeof v === 'number' ? v.toFixed(2) : '-'
  const pct = (v: number | undefined): string => v === undefined || Number.isNaN(v) ? '-' : `${v.toFixed(1)}%`
  const out = [
    `\n## Fairness (issue #3), ${String(r.date)}`, '',
    `- machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} vCPUs, ${process.platform} ${process.arch}; Node ${process.version}; load generator on the same machine`,
    `- command: \`npm run build && node dist/perf/bench-fairness.js${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}\` (phases ${PHASE_S} s, ${REPEATS} repetitions, cost events ${COST}, server.backgroundNice ${backgroundNice ?? 'default (10)'})`,
    `- platform: perf/out/fairness-platform.json (perf/bench-platform.ts): class \`shared\` (tiny-classifier) ${args.inline ? 'inline on the gateway thread' : 'on CPU 1'}, class \`heavy\` (heavy-encoder) on CPU 0, ${args.inline ? 'with one worker' : 'one worker each'}, no lending; open-loop Poisson arrivals, latency from the intended send time; each tenant group (victims, aggressor, heavy client) drives its own generator thread`, '',
  ]
  const nn = r.noisy_neighbour as Reps | undefined
  if (nn !== undefined) {
    out.push('### Noisy neighbour (victims v1, v2 at 300 req/s each, within their 400 req/s quota; aggressor at 3,000 req/s = 10x its 300 req/s quota)', '',
      '| rep | victim p50 alone / with (ms) | victim p99 alone / with (ms) | p99 ratio | floor: victim p99 with the aggressor on bare-server --refuse (ms) | floor ratio | victim service p99 alone / with (ms) | victim send lag p99 alone / with (ms) | victim errors | aggressor 429s | aggressor refusal p99 at the client (ms) | hypervisor steal alone / with |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|')
    nn.repetitions.forEach((x, i) => out.push(`| ${i + 1} | ${ms(x.victim_p50_alone_us)} / ${ms(x.victim_p50_with_us)} | ${ms(x.victim_p99_alone_us)} / ${ms(x.victim_p99_with_us)} | ${x2(x.p99_ratio)} | ${ms(x.victim_p99_floor_us)} | ${x2(x.floor_p99_ratio)} | ${ms(x.victim_service_p99_alone_us)} / ${ms(x.victim_service_p99_with_us)} | ${ms(x.victim_send_lag_p99_alone_us)} / ${ms(x.victim_send_lag_p99_with_us)} | ${x.victim_errors ?? '-'} | ${x.aggressor_rejected_429 ?? '-'} | ${ms(x.aggressor_client_reject_p99_us)} | ${pct(x.steal_alone_pct)} / ${pct(x.steal_with_pct)} |`))
    const spread = nn.p99_ratio_spread as number[]
    out.push('', `Median victim p99 ratio **${x2(nn.median_p99_ratio)}** (spread ${x2(spread[0])}–${x2(spread[1])}; goal ≤ 1.10), median p50 ratio ${x2(nn.median_p50_ratio)}, median service-time p99 ratio ${x2(nn.median_service_p99_ratio)}. Floor (the same aggressor against a separate process that only refuses): median ratio ${x2(nn.median_floor_p99_ratio)}; fairway's ratio over the floor's, median per repetition, ${x2(nn.median_p99_ratio_over_floor)}. Victim errors **${String(nn.victim_errors_total)}** (goal 0). Aggressor refusals inside the server, arrival to response written: p50 **${Number(nn.server_refusal_p50_us).toFixed(0)} µs**, p99 **${Number(nn.server_refusal_p99_us).toFixed(0)} µs** over ${String(nn.server_refusals)} refusals (goal p99 < 1 ms).`, '')
  }
  const ws = r.weighted_shares as { rows: Array<Record<string, number | string>>, served_rps_total: number } | undefined
  if (ws !== undefined) {
    out.push('### Weighted shares under saturation (w1, w2, w4 with weights 1, 2, 4; 8-row heavy-encoder requests at 700 req/s each, all backlogged)', '',
      '| tenant | weight | served | measured share | weighted fair share | relative error |', '|---|---|---|---|---|---|')
    for (const row of ws.rows) out.push(`| ${row.tenant} | ${row.weight} | ${row.served} | ${Number(row.share).toFixed(4)} | ${Number(row.weighted_max_min_share).toFixed(4)} | ${(Number(row.relative_error) * 100).toFixed(2)}% |`)
    out.push('', `Goal: within 5%. Served ${ws.served_rps_total.toFixed(0)} req/s in total.`, '')
  }
  for (const [key, label] of [['heavy_vs_light_gateway_unpinned', 'gateway unpinned'], ['heavy_vs_light_gateway_pinned', 'gateway pinned to CPU 1 (`server.cpus`)']] as const) {
    const h = r[key] as Reps | undefined
    if (h === undefined) continue
    out.push(`### Heavy vs light, ${label} (light tenant at 300 req/s on tiny-classifier; heavy class idle vs driven at 1,000 req/s)`, '',
      '| rep | light p99 heavy idle (ms) | light p99 heavy saturated (ms) | ratio | hypervisor steal idle / saturated |', '|---|---|---|---|---|')
    h.repetitions.forEach((x, i) => out.push(`| ${i + 1} | ${ms(x.light_p99_heavy_idle_us)} | ${ms(x.light_p99_heavy_saturated_us)} | ${x2(x.ratio)} | ${pct(x.steal_idle_pct)} / ${pct(x.steal_saturated_pct)} |`))
    out.push('', `Median ratio **${x2(h.median_ratio)}** (goal ≤ 1.2).`, '')
  }
  const b = r.batching as Record<string, { ok_rps: number, p50_us: number, p99_us: number, errors: number }> & { throughput_ratio_on_vs_off?: number } | undefined
  if (b !== undefined) {
    out.push('### Dynamic batching (tiny-classifier, 1-row requests, 20,000 req/s offered, open loop)', '', '| server | served req/s | p50 (ms) | p99 (ms) | errors |', '|---|---|---|---|---|')
    for (const label of ['batching off', 'batching on']) {
      const row = b[label]
      if (row !== undefined) out.push(`| fairway, ${label}${label === 'batching off' ? ' (baseline: `--no-batching`)' : ''} | ${row.ok_rps.toFixed(0)} | ${ms(row.p50_us)} | ${ms(row.p99_us)} | ${row.errors} |`)
    }
    out.push('', `Throughput with batching / without: **${x2(b.throughput_ratio_on_vs_off)}x**.`, '')
  }
  return out.join('\n') + '\n'
}
