// Interleaved phases: a condition and its baseline measured in alternation,
// seconds apart, inside one continuous run of the tenants being measured.
//
// Why: on this VM hypervisor steal moves by tens of percent within a minute
// (perf/README.md, "Steal time"), and a ratio taken between two runs half a
// minute apart compares two machines. Here the interfering client (an
// aggressor, a heavy tenant) runs beside the measured one, switched on and
// off by rate phases on a plan shared by every run (RunOptions.startAt), and
// each measured request is classified by its intended send time into the
// phase it belongs to. Drift then falls on both conditions alike.
//
// A phase's counted window starts `settle` after the phase starts, and in a
// quiet phase not before the interferers' earlier requests have all been
// answered (a heavy backlog drains into what would otherwise count as idle).

import type { Histogram } from 'hdr-histogram-js'
import { newHistogram, type PhaseSpec, type Sample } from './loadgen-common.js'

/** Phase kinds in order, from `cycles` repetitions of `cycle` and one closing phase (so every phase has a baseline on both sides). */
export function plan (cycles: number, cycle: readonly string[], closing: string): string[] {
  const out: string[] = []
  for (let i = 0; i < cycles; i++) out.push(...cycle)
  out.push(closing)
  return out
}

/** The rate phases of a flow that sends `rate` requests/s in the phases of `kind` (and nothing between). */
export function phasesFor (kinds: readonly string[], kind: string, phaseS: number, rate: number): PhaseSpec[] {
  const out: PhaseSpec[] = []
  kinds.forEach((k, i) => { if (k === kind) out.push({ from_s: i * phaseS, to_s: (i + 1) * phaseS, rate }) })
  return out
}

export interface Window {
  /** Phase index in the plan. */
  index: number
  kind: string
  /** Epoch ms: the counted part of the phase, [fromMs, toMs); empty when fromMs >= toMs. */
  fromMs: number
  toMs: number
}

/**
 * The counted window of each phase. `startMs` is the epoch ms of phase 0;
 * `interferers` are the interfering clients' samples; `quiet` says which
 * kinds have no interfering traffic (their windows wait for its last answer).
 */
export function windows (kinds: readonly string[], startMs: number, phaseS: number, settleMs: number, interferers: readonly Sample[], quiet: ReadonlySet<string>): Window[] {
  // Completion time of each interfering request, in intended order.
  const sorted = [...interferers].filter((s) => s.latencyUs >= 0).sort((a, b) => a.intendedMs - b.intendedMs)
  let k = 0
  let lastDone = -Infinity
  return kinds.map((kind, index) => {
    const phaseStart = startMs + index * phaseS * 1000
    for (; k < sorted.length && (sorted[k] as Sample).intendedMs < phaseStart; k++) {
      const s = sorted[k] as Sample
      lastDone = Math.max(lastDone, s.intendedMs + s.latencyUs / 1000)
    }
    const fromMs = Math.max(phaseStart + settleMs, quiet.has(kind) ? lastDone : -Infinity)
    return { index, kind, fromMs, toMs: phaseStart + phaseS * 1000 }
  })
}

export interface WindowStats {
  readonly window: Window
  /** 2xx latency from the intended send time. */
  readonly latency: Histogram
  /** 2xx latency from the write to the connection: the server's part without the generator's send lag. */
  readonly service: Histogram
  /** How late the generator sent (sent - intended), every request sent. */
  readonly sendLag: Histogram
  /** Non-2xx, transport errors and drops. */
  errors: number
}

function us (ms: number): number {
  return Math.max(1, Math.round(ms * 1000))
}

/** Sorts the measured tenants' samples into the windows by intended send time. */
export function windowStats (samples: readonly Sample[], ws: readonly Window[]): WindowStats[] {
  const out = ws.map((w): WindowStats => ({ window: w, latency: newHistogram(), service: newHistogram(), sendLag: newHistogram(), errors: 0 }))
  for (const s of samples) {
    // A handful of windows: a linear scan per sample costs less than sorting.
    const st = out.find((o) => s.intendedMs >= o.window.fromMs && s.intendedMs < o.window.toMs)
    if (st === undefined) continue
    if (s.sentMs > 0) st.sendLag.recordValue(us(s.sentMs - s.intendedMs))
    if (s.status >= 200 && s.status < 300) {
      st.latency.recordValue(Math.max(1, s.latencyUs))
      const done = s.intendedMs + s.latencyUs / 1000
      st.service.recordValue(us(done - (s.wireMs > 0 ? s.wireMs : s.sentMs)))
    } else {
      st.errors++
    }
  }
  return out
}

/** One histogram of the given windows' histograms (which of them: `pick`). */
export function merged (stats: readonly WindowStats[], pick: (s: WindowStats) => Histogram): Histogram {
  const h = newHistogram()
  for (const s of stats) h.add(pick(s))
  return h
}

/**
 * Mean steal over [fromMs, toMs), from a per-second series whose bucket 0
 * starts at `bucket0Ms`, each second weighted by its overlap; null when no
 * second with a figure overlaps.
 */
export function stealOver (series: ReadonlyArray<number | null>, bucket0Ms: number, fromMs: number, toMs: number): number | null {
  let sum = 0
  let weight = 0
  for (let i = Math.max(0, Math.floor((fromMs - bucket0Ms) / 1000)); i < series.length; i++) {
    const a = Math.max(fromMs, bucket0Ms + i * 1000)
    const b = Math.min(toMs, bucket0Ms + (i + 1) * 1000)
    if (a >= toMs) break
    const v = series[i]
    if (b <= a || v === null || v === undefined) continue
    sum += v * (b - a)
    weight += b - a
  }
  return weight === 0 ? null : sum / weight
}
