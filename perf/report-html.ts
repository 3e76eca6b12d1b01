// Reports of a load-generator result (perf/loadgen.ts): the rows of the
// result table (shared with the text table) and a self-contained HTML page
// with inline SVG plots. The page loads nothing: no script, no stylesheet, no
// font, no CDN, so it opens in a browser on a machine without network access
// and can be attached to an issue as is.
//
// Plots:
//   - latency percentile distribution per flow and per tenant, on the
//     "nines" axis of HdrHistogram plots (x = -log10(1 - p): 0%, 90%, 99%,
//     99.9%...), so the tail gets as much room as the median;
//   - p50 and p99 latency per second per flow;
//   - 2xx responses per second per flow (throughput), errors per second.
// Latency axes are logarithmic: a 1 ms median and a 300 ms tail both stay legible.
//
// CLI (re-render a saved result): node dist/perf/report-html.js RESULT.json [--out FILE.html]

import { readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { decodeFromCompressedBase64 } from 'hdr-histogram-js'
import { parseCli } from './cli-args.js'
import type { GroupResult, LoadResult } from './loadgen.js'

// ---- the result table (text and HTML) ----

/** Microseconds as milliseconds with 3 significant-ish digits. */
export function ms (us: number): string {
  if (us >= 100_000) return (us / 1000).toFixed(0)
  if (us >= 10_000) return (us / 1000).toFixed(1)
  return (us / 1000).toFixed(2)
}

export function errorText (g: GroupResult): string {
  const parts: string[] = []
  for (const [s, n] of Object.entries(g.status)) if (!s.startsWith('2')) parts.push(`HTTP ${s} x${n}`)
  for (const [c, n] of Object.entries(g.error_codes)) parts.push(`${c} x${n}`)
  for (const [c, n] of Object.entries(g.transport_errors)) parts.push(`${c} x${n}`)
  if (g.dropped > 0) parts.push(`dropped x${g.dropped}`)
  return parts.length === 0 ? '-' : parts.join(', ')
}

/** One row per flow, then per tenant (when they differ from the flows) and the total. */
export function resultRows (r: LoadResult): { title: string, headers: string[], rows: string[][] } {
  const headers = ['flow', 'offered/s', 'sent/s', 'ok/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'lag p99 ms', 'errors']
  const row = (name: string, g: GroupResult): string[] => [
    name, g.offered_rate.toFixed(0), g.sent_rate.toFixed(0), g.ok_rate.toFixed(0),
    ms(g.latency_us.p50), ms(g.latency_us.p90), ms(g.latency_us.p99), ms(g.latency_us.p999), ms(g.latency_us.max),
    ms(g.send_lag_us.p99), g.errors === 0 ? '0' : `${g.errors}: ${errorText(g)}`,
  ]
  const rows = r.flows.map((f) => row(`${f.name} (${f.model} x${f.rows} ${f.protocol === 'websocket' ? 'ws ' : ''}${f.encoding} ${f.arrival})`, f))
  if (!tenantsAreFlows(r)) for (const t of r.tenants) rows.push(row(`tenant ${t.name}`, t))
  if (r.flows.length > 1) rows.push(row('total', r.total))
  const ws = r.flows.some((f) => f.protocol === 'websocket') ? ' (websocket flows: see each flow\'s connections)' : ''
  const title = `${r.target}: ${r.duration_s}s measured after ${r.warmup_s}s warmup, ${r.threads} generator thread(s) x ${r.connections} connections${ws}; latency of 2xx responses from intended send time`
  return { title, headers, rows }
}

function tenantsAreFlows (r: LoadResult): boolean {
  return r.tenants.length === r.flows.length && r.flows.every((f) => f.tenant === f.name)
}

// ---- SVG charts ----

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22']
const W = 820
const MIN_H = 340
const LEGEND_ROW = 16
const M = { left: 64, right: 190, top: 34, bottom: 48 }

interface Series {
  name: string
  color: string
  dash?: string
  /** Points in data units; a point with NaN y breaks the line. */
  points: Array<[number, number]>
}

interface Tick { v: number, label: string }

interface Axis {
  min: number
  max: number
  log: boolean
  ticks: Tick[]
  label: string
}

/** A shaded x range with a label (the warmup). */
interface Band { from: number, to: number, label: string }

export function esc (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function n2 (x: number): string {
  return (Math.round(x * 100) / 100).toString()
}

function scale (a: Axis, from: number, to: number): (v: number) => number {
  const f = (v: number): number => a.log ? Math.log10(v) : v
  const lo = f(a.min)
  const span = f(a.max) - lo || 1
  return (v) => from + (f(v) - lo) / span * (to - from)
}

/** An SVG line chart. Inline SVG in HTML needs no xmlns, so the page names no URL at all. */
function lineChart (title: string, x: Axis, y: Axis, seriesIn: Series[], bands: Band[] = []): string {
  // Series without a drawable point (a flow with no 2xx) would only clutter the legend.
  const series = seriesIn.filter((s) => s.points.some(([, py]) => Number.isFinite(py) && (!y.log || py > 0)))
  // Tall enough for one legend row per series.
  const H = Math.max(MIN_H, M.top + M.bottom + 16 + series.length * LEGEND_ROW)
  const X = scale(x, M.left, W - M.right)
  const Y = scale(y, H - M.bottom, M.top)
  const out: string[] = [`<svg class="chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img"><title>${esc(title)}</title>`]
  out.push(`<text x="${M.left}" y="20" class="t">${esc(title)}</text>`)
  for (const b of bands) {
    const x0 = X(Math.max(b.from, x.min))
    const x1 = X(Math.min(b.to, x.max))
    if (x1 > x0) out.push(`<rect x="${n2(x0)}" y="${M.top}" width="${n2(x1 - x0)}" height="${H - M.top - M.bottom}" class="band"/><text x="${n2(x0 + 4)}" y="${M.top + 14}" class="s">${esc(b.label)}</text>`)
  }
  for (const t of y.ticks) out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${n2(Y(t.v))}" y2="${n2(Y(t.v))}" class="grid"/><text x="${M.left - 6}" y="${n2(Y(t.v) + 4)}" class="s" text-anchor="end">${esc(t.label)}</text>`)
  for (const t of x.ticks) out.push(`<line x1="${n2(X(t.v))}" x2="${n2(X(t.v))}" y1="${M.top}" y2="${H - M.bottom}" class="grid"/><text x="${n2(X(t.v))}" y="${H - M.bottom + 16}" class="s" text-anchor="middle">${esc(t.label)}</text>`)
  out.push(`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" class="frame"/>`)
  out.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 10}" class="s" text-anchor="middle">${esc(x.label)}</text>`)
  out.push(`<text transform="translate(14 ${(M.top + H - M.bottom) / 2}) rotate(-90)" class="s" text-anchor="middle">${esc(y.label)}</text>`)
  series.forEach((s, i) => {
    // Split at gaps (NaN, or <= 0 on a log axis) so a missing second is not bridged.
    let run: string[] = []
    const flush = (): void => {
      if (run.length > 0) out.push(`<polyline points="${run.join(' ')}" fill="none" stroke="${s.color}" stroke-width="1.6"${s.dash === undefined ? '' : ` stroke-dasharray="${s.dash}"`}/>`)
      run = []
    }
    for (const [px, py] of s.points) {
      if (!Number.isFinite(py) || (y.log && py <= 0)) { flush(); continue }
      const cy = Math.min(y.max, Math.max(y.min, py))
      run.push(`${n2(X(px))},${n2(Y(cy))}`)
    }
    if (run.length === 1) run.push(run[0] as string) // a lone point still shows
    flush()
    const ly = M.top + 8 + i * LEGEND_ROW
    out.push(`<line x1="${W - M.right + 10}" x2="${W - M.right + 34}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dash === undefined ? '' : ` stroke-dasharray="${s.dash}"`}/><text x="${W - M.right + 40}" y="${ly + 4}" class="s">${esc(s.name)}</text>`)
  })
  out.push('</svg>')
  return out.join('\n')
}

/** Decades (and 2, 5 within them when the range is short) covering [lo, hi], values in ms. */
function logAxis (values: number[], label: string): Axis {
  const pos = values.filter((v) => v > 0 && Number.isFinite(v))
  const lo = pos.length === 0 ? 0.1 : Math.min(...pos)
  const hi = pos.length === 0 ? 10 : Math.max(...pos)
  const min = 10 ** Math.floor(Math.log10(lo))
  const max = 10 ** Math.ceil(Math.log10(hi * 1.0001))
  const steps = Math.log10(max / min) <= 2 ? [1, 2, 5] : [1]
  const ticks: Tick[] = []
  for (let d = min; d <= max * 1.0001; d *= 10) for (const m of steps) if (d * m <= max * 1.0001) ticks.push({ v: d * m, label: fmtNum(d * m) })
  return { min, max: Math.max(max, min * 10), log: true, ticks, label }
}

/** 0 .. a round number above max, with about 5 ticks. */
function linearAxis (max: number, label: string, lo = 0): Axis {
  const span = Math.max(max - lo, 1e-9)
  const raw = span / 5
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = ([1, 2, 5, 10].find((k) => k * mag >= raw) ?? 10) * mag
  const min = Math.floor(lo / step) * step
  const top = Math.max(Math.ceil(max / step) * step, min + step)
  const ticks: Tick[] = []
  for (let v = min; v <= top + step / 2; v += step) ticks.push({ v, label: fmtNum(v) })
  return { min, max: top, log: false, ticks, label }
}

function fmtNum (v: number): string {
  if (v !== 0 && Math.abs(v) < 1) return String(Number(v.toPrecision(2)))
  return Math.abs(v) >= 10_000 ? `${Math.round(v / 1000)}k` : String(Math.round(v * 100) / 100)
}

// ---- the plots ----

/** Latency (ms) at percentiles spaced evenly in "nines", up to where the count runs out. */
export function percentileCurve (histogram: string): { points: Array<[number, number]>, nines: number } {
  const h = decodeFromCompressedBase64(histogram)
  if (h.totalCount === 0) return { points: [], nines: 0 }
  // Beyond log10(count) nines every percentile is the maximum.
  const nines = Math.min(6, Math.max(2, Math.ceil(Math.log10(h.totalCount))))
  const points: Array<[number, number]> = []
  for (let x = 0; x < nines; x += 0.02) points.push([x, h.getValueAtPercentile(100 * (1 - 10 ** -x)) / 1000])
  points.push([nines, h.maxValue / 1000])
  return { points, nines }
}

function distributionChart (title: string, groups: GroupResult[]): string {
  const curves = groups.map((g) => ({ g, ...percentileCurve(g.histogram) }))
  const nines = Math.max(2, ...curves.map((c) => c.nines))
  const ticks: Tick[] = Array.from({ length: nines + 1 }, (_, k) => ({ v: k, label: k === 0 ? '0%' : `${(100 - 100 / 10 ** k).toFixed(Math.max(0, k - 2))}%` }))
  const x: Axis = { min: 0, max: nines, log: false, ticks, label: 'percentile' }
  const y = logAxis(curves.flatMap((c) => c.points.map((p) => p[1])), 'latency ms (log)')
  return lineChart(title, x, y, curves.map((c, i) => ({ name: `${c.g.name} (${c.g.latency_us.count})`, color: COLORS[i % COLORS.length] as string, points: c.points })))
}

function timeAxis (r: LoadResult): { axis: Axis, bands: Band[], at: (i: number) => number } {
  const n = Math.max(1, ...r.timeline.flows.map((f) => f.ok.length))
  const start = r.timeline.start_s
  const end = start + n
  const a = linearAxis(end, 'seconds from the start of the measured period (bucket end)', start)
  const bands: Band[] = []
  if (start < 0) bands.push({ from: start, to: 0, label: 'warmup' })
  // The last bucket is usually a partial second: few responses, not a collapse.
  if (end > r.duration_s) bands.push({ from: r.duration_s, to: end, label: 'drain' })
  // A bucket is plotted at its end: "responses in the second up to t".
  const max = Math.max(end, start + 1)
  return { axis: { ...a, min: start, max, ticks: a.ticks.filter((t) => t.v >= start && t.v <= max) }, bands, at: (i) => start + i + 1 }
}

function latencyOverTime (r: LoadResult): string {
  const { axis, bands, at } = timeAxis(r)
  const series: Series[] = []
  r.timeline.flows.forEach((f, i) => {
    const color = COLORS[i % COLORS.length] as string
    const pick = (v: number[]): Array<[number, number]> => v.map((us, k) => [at(k), (f.ok[k] ?? 0) > 0 ? us / 1000 : NaN])
    series.push({ name: `${f.name} p99`, color, points: pick(f.p99_us) })
    series.push({ name: `${f.name} p50`, color, dash: '5 4', points: pick(f.p50_us) })
  })
  const y = logAxis(series.flatMap((s) => s.points.map((p) => p[1])), 'latency ms (log)')
  return lineChart('Latency per second (2xx, by completion second): p99 solid, p50 dashed', axis, y, series, bands)
}

function throughputOverTime (r: LoadResult): string {
  const { axis, bands, at } = timeAxis(r)
  const series: Series[] = []
  r.timeline.flows.forEach((f, i) => {
    const color = COLORS[i % COLORS.length] as string
    series.push({ name: `${f.name} ok/s`, color, points: f.ok.map((v, k) => [at(k), v]) })
    if (f.errors.some((e) => e > 0)) series.push({ name: `${f.name} errors/s`, color, dash: '2 3', points: f.errors.map((v, k) => [at(k), v]) })
  })
  const y = linearAxis(Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1]))), 'responses per second')
  return lineChart('Throughput: 2xx responses per second (errors dotted)', axis, y, series, bands)
}

/** Machine steal per second; results written before steal was recorded have none. */
function stealOverTime (r: LoadResult): string {
  const steal = r.timeline.steal_pct as LoadResult['timeline']['steal_pct'] | undefined
  if (steal === undefined || steal.every((v) => v === null)) return '<p class="note">No steal figures (not Linux, or a result from before they were recorded).</p>'
  const { axis, bands, at } = timeAxis(r)
  const points: Array<[number, number]> = steal.map((v, k) => [at(k), v ?? NaN])
  const y = linearAxis(Math.max(5, ...points.map((p) => Number.isNaN(p[1]) ? 0 : p[1])), '% of all cores\' time')
  return lineChart('Hypervisor steal per second (from /proc/stat): time the VM was ready to run but the host ran something else', axis, y, [{ name: 'steal %', color: '#7f7f7f', points }], bands)
}

/** The steal sentence of a report; '' when unknown. */
export function stealNote (r: LoadResult): string {
  const v = r.machine_steal_pct as number | null | undefined
  if (v === null || v === undefined) return ''
  const low = r.low_steal as LoadResult['low_steal'] | undefined
  const quiet = low === null || low === undefined || low.seconds === 0
    ? (low === null || low === undefined ? '' : ` No measured second had steal under ${low.threshold_pct}%.`)
    : ` Over the ${low.seconds} of ${low.of} measured seconds with steal under ${low.threshold_pct}% (${low.ok} responses): p50 ${ms(low.p50_us)} ms, p99 ${ms(low.p99_us)} ms.`
  return `Hypervisor steal over the measured period: ${v.toFixed(1)}% of all cores' time (a core taken away for milliseconds delays every request in flight on it).${quiet}`
}

function htmlTable (headers: string[], rows: string[][]): string {
  return `<table><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c, i) => `<td${i > 0 && i < headers.length - 1 ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`
}

function detailRows (r: LoadResult): string {
  const headers = ['flow', 'tenant', 'protocol', 'encoding', 'connections/thread', 'intended', 'sent', 'ok', 'svc p50 ms', 'svc p99 ms', 'lag p50 ms', 'lag p99 ms', 'local waits']
  const rows = r.flows.map((f) => [f.name, f.tenant, f.protocol, f.encoding, String(f.connections), String(f.intended), String(f.sent), String(f.ok), ms(f.service_us.p50), ms(f.service_us.p99), ms(f.send_lag_us.p50), ms(f.send_lag_us.p99), String(f.local_waits)])
  return htmlTable(headers, rows)
}

const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg.chart{display:block;margin:10px 0}.t{font-size:14px;font-weight:600}.s{font-size:11px;fill:#333}
.grid{stroke:#e6e6e6}.frame{fill:none;stroke:#999}.band{fill:#f0f0f0}
p.note{color:#555;font-size:13px}`

/** The whole report: a self-contained HTML page. */
export function renderHtml (r: LoadResult): string {
  const { title, headers, rows } = resultRows(r)
  const groups = tenantsAreFlows(r) ? r.flows : [...r.flows, ...r.tenants.map((t) => ({ ...t, name: `tenant ${t.name}` }))]
  const cpu = r.generator_cpu_ms
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loadgen ${esc(r.started_at)}</title><style>${STYLE}</style></head><body>
<h1>Load generator report, ${esc(r.started_at)}</h1>
<p>${esc(title)}.</p>
<p class="note">Open loop: every request was sent at its intended time from the arrival schedule whether or not earlier ones had been answered, and latency is measured from that intended time, so a stall (server, connection or generator) is charged to every request it delayed. "lag" is how late the generator sent; "svc" is latency from when the request was written to a connection (what a closed-loop tool reports). WebSocket messages that found all connections at 256 in flight waited in the generator ("local waits"); the wait is in their latency. Generator CPU over the run: ${cpu.user} ms user, ${cpu.system} ms system. ${esc(stealNote(r))}</p>
<h2>Results</h2>
${htmlTable(headers, rows)}
<h2>Details</h2>
${detailRows(r)}
<h2>Latency distribution</h2>
${distributionChart('Latency by percentile (2xx, measured period)', groups)}
<h2>Latency over time</h2>
${latencyOverTime(r)}
<h2>Throughput over time</h2>
${throughputOverTime(r)}
<h2>Machine steal over time</h2>
${stealOverTime(r)}
<h2>Scenario</h2>
<pre>${esc(JSON.stringify(r.scenario, null, 2))}</pre>
</body></html>
`
}

// ---- CLI ----

function main (): number {
  const usage = 'usage: node dist/perf/report-html.js RESULT.json [--out FILE.html] [--help]   (re-renders a loadgen JSON result as HTML)'
  const { values, positionals } = parseCli(usage, { out: { type: 'string' } }, true)
  const file = positionals[0]
  if (file === undefined || positionals.length > 1) {
    console.error(usage)
    return 2
  }
  const result = JSON.parse(readFileSync(file, 'utf8')) as LoadResult
  const out = values.out ?? file.replace(/\.json$/, '') + '.html'
  writeFileSync(out, renderHtml(result))
  console.log(`report: ${out}`)
  return 0
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main()
