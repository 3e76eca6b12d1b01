// Fairness benchmarks (issue #3), against a real fairway started as a child
// process with a benchmark platform config, driven by the open-loop load
// generator (perf/loadgen.ts). Every figure is a ratio against a baseline run
// in the same script, or a share against the configured weight.
//
//   noisy neighbour  victims within quota; an aggressor at 10x its quota;
//                    interleaved phases alone / aggressor on fairway / alone /
//                    aggressor on a separate refusing process (the machine's
//                    floor), cycled, inside one victims' run (perf/interleave.ts)
//   weighted shares  three tenants (weights 1, 2, 4) saturating one class
//   heavy vs light   small-model latency with the heavy class idle vs saturated,
//                    interleaved the same way
//   batching         small-model saturation throughput with / without batching
//
// Run: npm run bench:fairness [-- --phase-s 6 --repeats 6 --toggle-s 3 --only noisy,weights,heavy,batching
//        --cost on|off --background-nice N --inline --out perf/out/fairness.json --results perf/RESULTS.md|none]
// Appends its headline figures to perf/RESULTS.md.

import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { ADMIN, median, platform, ROOT, startBaseline, startFairway, stop, type Server } from './bench-platform.js'
import { cliChoice, cliNumber, parseCli } from './cli-args.js'
import { merged, phasesFor, plan, stealOver, windows, windowStats, type WindowStats } from './interleave.js'
import { nowMs } from './loadgen-common.js'
import { runLoad, type FlowSpec, type LoadResult, type Scenario } from './loadgen.js'

const USAGE = `usage: node dist/perf/bench-fairness.js [options]   (npm run bench:fairness -- [options])
  --phase-s S           seconds of the weighted-shares and batching runs (default 6; weighted shares run twice that)
  --repeats N           cycles of the interleaved noisy-neighbour and heavy-vs-light phases;
                        the median per-cycle ratio is reported (default 6)
  --toggle-s S          seconds per interleaved phase (default 3)
  --only LIST           comma-separated from noisy,weights,heavy,batching (default: all)
  --cost on|off         cost events in the server under test (default on)
  --background-nice N   server.backgroundNice of the server under test (default: the server's own, 10)
  --inline              the light class runs "runtime": "inline" (batches on the gateway thread)
  --out FILE            JSON results (default perf/out/fairness.json)
  --results FILE|none   where the headline figures are appended (default perf/RESULTS.md)
  --help                this text`

const { values: args } = parseCli(USAGE, {
  'phase-s': { type: 'string', default: '6' },
  repeats: { type: 'string', default: '6' },
  'toggle-s': { type: 'string', default: '3' },
  out: { type: 'string', default: join(ROOT, 'perf', 'out', 'fairness.json') },
  only: { type: 'string' },
  cost: { type: 'string', default: 'on' },
  'background-nice': { type: 'string' },
  inline: { type: 'boolean', default: false },
  results: { type: 'string', default: join(ROOT, 'perf', 'RESULTS.md') },
})
const PHASE_S = cliNumber(USAGE, 'phase-s', args['phase-s'], 1)
const REPEATS = cliNumber(USAGE, 'repeats', args.repeats, 1)
const TOGGLE_S = cliNumber(USAGE, 'toggle-s', args['toggle-s'], 1)
/** Left out at the start of each interleaved phase: the switch itself (the clients' in-flight requests, a second's boundary). */
const SETTLE_MS = 500
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

/** Latency figures of a group of windows (µs), and its steal. */
function figures (stats: readonly WindowStats[], steal: ReadonlyArray<number | null>, bucket0Ms: number): Record<string, number> {
  const lat = merged(stats, (x) => x.latency)
  let stealSum = 0
  let stealMs = 0
  for (const x of stats) {
    const v = stealOver(steal, bucket0Ms, x.window.fromMs, x.window.toMs)
    if (v === null) continue
    stealSum += v * (x.window.toMs - x.window.fromMs)
    stealMs += x.window.toMs - x.window.fromMs
  }
  return {
    ok: lat.totalCount,
    errors: stats.reduce((n, x) => n + x.errors, 0),
    p50_us: lat.getValueAtPercentile(50),
    p99_us: lat.getValueAtPercentile(99),
    service_p99_us: merged(stats, (x) => x.service).getValueAtPercentile(99),
    send_lag_p99_us: merged(stats, (x) => x.sendLag).getValueAtPercentile(99),
    steal_pct: stealMs === 0 ? NaN : stealSum / stealMs,
  }
}

interface Interfering { scenario: Scenario, kind: string }

interface InterleavedRun {
  kinds: string[]
  measured: LoadResult
  interferers: LoadResult[]
  stats: WindowStats[]
}

/**
 * One run of `measured` across the whole plan, beside each interfering
 * client switched on only in the phases of its kind (perf/interleave.ts).
 * Every run has its own generator thread, so an interferer's sends do not
 * delay the measured tenants' sends in one event loop (that lag would be
 * charged to them as latency), and all start on one shared clock.
 */
async function interleaved (measured: Scenario, interfering: Interfering[], kinds: string[], quietKinds: string[]): Promise<InterleavedRun> {
  const totalS = kinds.length * TOGGLE_S
  const warmup = 1
  const startAt = nowMs() + 4000 // connections and model metadata first
  const opts = { progress: false, collectSamples: 400_000, startAt }
  const runs = [
    runLoad({ ...measured, duration_s: totalS, warmup_s: warmup }, opts),
    ...interfering.map(async (x) => await runLoad({
      ...x.scenario,
      duration_s: totalS,
      warmup_s: warmup,
      flows: x.scenario.flows.map((f) => ({ ...f, rate: 0, phases: phasesFor(kinds, x.kind, TOGGLE_S, f.rate) })),
    }, opts)),
  ]
  const [m, ...others] = await Promise.all(runs) as [LoadResult, ...LoadResult[]]
  const phase0 = startAt + warmup * 1000
  const ws = windows(kinds, phase0, TOGGLE_S, SETTLE_MS, others.flatMap((r) => r.samples ?? []), new Set(quietKinds))
  return { kinds, measured: m, interferers: others, stats: windowStats(m.samples ?? [], ws) }
}

async function noisyNeighbour (s: Server): Promise<Record<string, unknown>> {
  const victims = [flow('v1', 'fw_bench_v1', 'tiny-classifier', 300), flow('v2', 'fw_bench_v2', 'tiny-classifier', 300)]
  const aggressor = flow('noisy', 'fw_bench_noisy', 'tiny-classifier', 3000) // 10x its 300/s quota
  // The floor: the same aggressor against another process that refuses
  // every request as cheaply as this stack can (bare-server --refuse). What
  // that does to the victims is what the aggressor's traffic costs this
  // machine (its generator thread, the loopback stack, the refusals
  // themselves) before fairway's isolation is involved at all.
  const refuser = await startBaseline('bare', ['--refuse'])
  let run: InterleavedRun
  try {
    run = await interleaved(scenario(s.url, victims), [
      { scenario: scenario(s.url, [aggressor]), kind: 'with' },
      { scenario: scenario(refuser.url, [aggressor]), kind: 'floor' },
    ], plan(REPEATS, ['alone', 'with', 'alone', 'floor'], 'alone'), ['alone'])
  } finally {
    await stop(refuser)
  }
  const st = run.stats
  const steal = run.measured.timeline.steal_pct
  const b0 = run.measured.timeline.start_epoch_ms
  const f = (xs: Array<WindowStats | undefined>): Record<string, number> => figures(xs.filter((x): x is WindowStats => x !== undefined), steal, b0)
  // Cycle c: alone (4c), with (4c+1), alone (4c+2), floor (4c+3), alone (4c+4).
  const cycles = Array.from({ length: REPEATS }, (_, c) => {
    const alone = f([st[4 * c], st[4 * c + 2]])
    const withA = f([st[4 * c + 1]])
    const floorAlone = f([st[4 * c + 2], st[4 * c + 4]])
    const floor = f([st[4 * c + 3]])
    return {
      alone, with: withA, floor_alone: floorAlone, floor,
      p50_ratio: (withA.p50_us ?? NaN) / (alone.p50_us ?? NaN),
      p99_ratio: (withA.p99_us ?? NaN) / (alone.p99_us ?? NaN),
      service_p99_ratio: (withA.service_p99_us ?? NaN) / (alone.service_p99_us ?? NaN),
      floor_p99_ratio: (floor.p99_us ?? NaN) / (floorAlone.p99_us ?? NaN),
    }
  })
  const all = { alone: f(st.filter((x) => x.window.kind === 'alone')), with: f(st.filter((x) => x.window.kind === 'with')), floor: f(st.filter((x) => x.window.kind === 'floor')) }
  const agg = tenantOf(run.interferers[0] as LoadResult, 'noisy')
  const m = await metrics(s)
  const ratios = cycles.map((c) => c.p99_ratio)
  return {
    phase_s: TOGGLE_S,
    settle_ms: SETTLE_MS,
    cycles,
    all_cycles: { ...all, p99_ratio: (all.with.p99_us ?? NaN) / (all.alone.p99_us ?? NaN), floor_p99_ratio: (all.floor.p99_us ?? NaN) / (all.alone.p99_us ?? NaN) },
    median_p50_ratio: median(cycles.map((c) => c.p50_ratio)),
    median_p99_ratio: median(ratios),
    p99_ratio_spread: [Math.min(...ratios), Math.max(...ratios)],
    median_service_p99_ratio: median(cycles.map((c) => c.service_p99_ratio)),
    median_floor_p99_ratio: median(cycles.map((c) => c.floor_p99_ratio)),
    median_p99_ratio_over_floor: median(cycles.map((c) => c.p99_ratio / c.floor_p99_ratio)),
    // Every victim request of the run, phases and settling included.
    victim_errors_total: (tenantOf(run.measured, 'v1')?.errors ?? 0) + (tenantOf(run.measured, 'v2')?.errors ?? 0),
    aggressor_sent: agg?.sent ?? 0,
    aggressor_ok: agg?.ok ?? 0,
    aggressor_rejected_429: agg?.status['429'] ?? 0,
    aggressor_client_reject_p50_us: agg?.error_latency_us.p50 ?? NaN,
    aggressor_client_reject_p99_us: agg?.error_latency_us.p99 ?? NaN,
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
  // Idle windows open only once the heavy backlog of the busy phase before has drained.
  const run = await interleaved(scenario(s.url, light), [{ scenario: scenario(s.url, [heavy]), kind: 'busy' }], plan(REPEATS, ['idle', 'busy'], 'idle'), ['idle'])
  const st = run.stats
  const f = (xs: Array<WindowStats | undefined>): Record<string, number> => figures(xs.filter((x): x is WindowStats => x !== undefined), run.measured.timeline.steal_pct, run.measured.timeline.start_epoch_ms)
  // Cycle c: idle (2c), busy (2c+1), idle (2c+2).
  const cycles = Array.from({ length: REPEATS }, (_, c) => {
    const idle = f([st[2 * c], st[2 * c + 2]])
    const busy = f([st[2 * c + 1]])
    return { idle, busy, ratio: (busy.p99_us ?? NaN) / (idle.p99_us ?? NaN), service_p99_ratio: (busy.service_p99_us ?? NaN) / (idle.service_p99_us ?? NaN) }
  })
  const idle = f(st.filter((x) => x.window.kind === 'idle'))
  const busy = f(st.filter((x) => x.window.kind === 'busy'))
  const h = tenantOf(run.interferers[0] as LoadResult, 'w4')
  return {
    phase_s: TOGGLE_S,
    cycles,
    all_cycles: { idle, busy, ratio: (busy.p99_us ?? NaN) / (idle.p99_us ?? NaN) },
    median_ratio: median(cycles.map((c) => c.ratio)),
    // From the write to the connection: the server's part, without the generator's own send lag.
    median_service_p99_ratio: median(cycles.map((c) => c.service_p99_ratio)),
    ratio_spread: [Math.min(...cycles.map((c) => c.ratio)), Math.max(...cycles.map((c) => c.ratio))],
    heavy_ok: h?.ok ?? 0,
    heavy_refused: (h?.responses ?? 0) - (h?.ok ?? 0),
  }
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
const results: Record<string, unknown> = { date: new Date().toISOString(), phase_s: PHASE_S, repeats: REPEATS, toggle_s: TOGGLE_S, cost_events: COST, background_nice: backgroundNice ?? 'default' }
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
  const ms = (us: number | undefined): string => ((us ?? NaN) / 1000).toFixed(2)
  const x2 = (v: unknown): string => typeof v === 'number' ? v.toFixed(2) : '-'
  const pct = (v: number | undefined): string => v === undefined || Number.isNaN(v) ? '-' : `${v.toFixed(1)}%`
  const out = [
    `\n## Fairness (issue #3), ${String(r.date)}`, '',
    `- machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} vCPUs, ${process.platform} ${process.arch}; Node ${process.version}; load generator on the same machine`,
    `- command: \`npm run build && node dist/perf/bench-fairness.js${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}\` (noisy neighbour and heavy vs light: ${REPEATS} interleaved cycles of ${TOGGLE_S} s phases; weighted shares ${PHASE_S * 2} s, batching ${PHASE_S} s per run; cost events ${COST}, server.backgroundNice ${backgroundNice ?? 'default (10)'})`,
    `- platform: perf/out/fairness-platform.json (perf/bench-platform.ts): class \`shared\` (tiny-classifier) ${args.inline ? 'inline on the gateway thread' : 'on CPU 1'}, class \`heavy\` (heavy-encoder) on CPU 0, ${args.inline ? 'with one worker' : 'one worker each'}, no lending; open-loop Poisson arrivals, latency from the intended send time; each tenant group (victims, aggressor, heavy client) drives its own generator thread`, '',
  ]
  type Fig = Record<string, number>
  const nn = r.noisy_neighbour as { cycles: Array<Record<string, Fig | number>>, all_cycles: Record<string, Fig | number> } & Record<string, unknown> | undefined
  if (nn !== undefined) {
    const fig = (x: Fig | number | undefined): Fig => (typeof x === 'object' ? x : {})
    out.push('### Noisy neighbour (victims v1, v2 at 300 req/s each, within their 400 req/s quota; aggressor at 3,000 req/s = 10x its 300 req/s quota)', '',
      `Interleaved: one victims' run through ${REPEATS} cycles of ${TOGGLE_S} s phases alone / aggressor on fairway / alone / aggressor on bare-server --refuse (the floor), and a closing alone phase; the first ${SETTLE_MS} ms of each phase left out. Victim figures are v1 and v2 together, each request classified by its intended send time; a cycle's "alone" is the two alone phases around its aggressor phase.`, '',
      '| cycle | victim p50 alone / with (ms) | victim p99 alone / with (ms) | p99 ratio | floor: victim p99 (ms) | floor ratio | victim service p99 alone / with (ms) | victim send lag p99 alone / with (ms) | hypervisor steal alone / with / floor |',
      '|---|---|---|---|---|---|---|---|---|')
    const row = (label: string, c: Record<string, Fig | number>, alone: Fig, floorAlone: Fig): string => {
      const w = fig(c.with)
      const fl = fig(c.floor)
      return `| ${label} | ${ms(alone.p50_us)} / ${ms(w.p50_us)} | ${ms(alone.p99_us)} / ${ms(w.p99_us)} | ${x2((w.p99_us ?? NaN) / (alone.p99_us ?? NaN))} | ${ms(fl.p99_us)} | ${x2((fl.p99_us ?? NaN) / (floorAlone.p99_us ?? NaN))} | ${ms(alone.service_p99_us)} / ${ms(w.service_p99_us)} | ${ms(alone.send_lag_p99_us)} / ${ms(w.send_lag_p99_us)} | ${pct(alone.steal_pct)} / ${pct(w.steal_pct)} / ${pct(fl.steal_pct)} |`
    }
    nn.cycles.forEach((c, i) => out.push(row(String(i + 1), c, fig(c.alone), fig(c.floor_alone))))
    out.push(row('all cycles together', nn.all_cycles, fig(nn.all_cycles.alone), fig(nn.all_cycles.alone)))
    const spread = nn.p99_ratio_spread as number[]
    out.push('', `Median victim p99 ratio over the cycles **${x2(nn.median_p99_ratio)}** (spread ${x2(spread[0])}–${x2(spread[1])}; goal ≤ 1.10); all cycles together ${x2(nn.all_cycles.p99_ratio)}. Median p50 ratio ${x2(nn.median_p50_ratio)}, median service-time p99 ratio ${x2(nn.median_service_p99_ratio)}. Floor (the same aggressor against a separate process that only refuses): median ratio ${x2(nn.median_floor_p99_ratio)}; fairway's ratio over the floor's, median per cycle, ${x2(nn.median_p99_ratio_over_floor)}. Victim errors **${String(nn.victim_errors_total)}** over the whole run (goal 0). Aggressor: ${String(nn.aggressor_rejected_429)} refused with 429 of ${String(nn.aggressor_sent)} sent, refusal p99 at the client ${ms(nn.aggressor_client_reject_p99_us as number)} ms; inside the server, arrival to response written: p50 **${Number(nn.server_refusal_p50_us).toFixed(0)} µs**, p99 **${Number(nn.server_refusal_p99_us).toFixed(0)} µs** over ${String(nn.server_refusals)} refusals (goal p99 < 1 ms).`, '')
  }
  const ws = r.weighted_shares as { rows: Array<Record<string, number | string>>, served_rps_total: number } | undefined
  if (ws !== undefined) {
    out.push('### Weighted shares under saturation (w1, w2, w4 with weights 1, 2, 4; 8-row heavy-encoder requests at 700 req/s each, all backlogged)', '',
      '| tenant | weight | served | measured share | weighted fair share | relative error |', '|---|---|---|---|---|---|')
    for (const row of ws.rows) out.push(`| ${row.tenant} | ${row.weight} | ${row.served} | ${Number(row.share).toFixed(4)} | ${Number(row.weighted_max_min_share).toFixed(4)} | ${(Number(row.relative_error) * 100).toFixed(2)}% |`)
    out.push('', `Goal: within 5%. Served ${ws.served_rps_total.toFixed(0)} req/s in total.`, '')
  }
  for (const [key, label] of [['heavy_vs_light_gateway_unpinned', 'gateway unpinned'], ['heavy_vs_light_gateway_pinned', 'gateway pinned to CPU 1 (`server.cpus`)']] as const) {
    const h = r[key] as { cycles: Array<{ idle: Fig, busy: Fig, ratio: number }>, all_cycles: { idle: Fig, busy: Fig, ratio: number }, median_ratio: number, median_service_p99_ratio: number, ratio_spread: number[], heavy_ok: number, heavy_refused: number } | undefined
    if (h === undefined) continue
    out.push(`### Heavy vs light, ${label} (light tenant at 300 req/s on tiny-classifier; heavy class idle vs driven at 1,000 req/s)`, '',
      `Interleaved: one light run through ${REPEATS} cycles of ${TOGGLE_S} s phases heavy idle / heavy driven, and a closing idle phase; an idle phase is counted from ${SETTLE_MS} ms in and not before the heavy client's last earlier request was answered.`, '',
      '| cycle | light p99 heavy idle (ms) | light p99 heavy saturated (ms) | ratio | light service p99 idle / saturated (ms) | light send lag p99 idle / saturated (ms) | light requests idle / saturated | hypervisor steal idle / saturated |', '|---|---|---|---|---|---|---|---|')
    const row = (label: string, c: { idle: Fig, busy: Fig, ratio: number }): string => `| ${label} | ${ms(c.idle.p99_us)} | ${ms(c.busy.p99_us)} | ${x2(c.ratio)} | ${ms(c.idle.service_p99_us)} / ${ms(c.busy.service_p99_us)} | ${ms(c.idle.send_lag_p99_us)} / ${ms(c.busy.send_lag_p99_us)} | ${c.idle.ok ?? '-'} / ${c.busy.ok ?? '-'} | ${pct(c.idle.steal_pct)} / ${pct(c.busy.steal_pct)} |`
    h.cycles.forEach((c, i) => out.push(row(String(i + 1), c)))
    out.push(row('all cycles together', h.all_cycles))
    out.push('', `Median ratio over the cycles **${x2(h.median_ratio)}** (spread ${x2(h.ratio_spread[0])}–${x2(h.ratio_spread[1])}; goal ≤ 1.2); all cycles together ${x2(h.all_cycles.ratio)}; median service-time p99 ratio ${x2(h.median_service_p99_ratio)}. Heavy client: ${h.heavy_ok} answered 2xx, ${h.heavy_refused} refused.`, '')
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
