// perf/interleave.ts: the phase plan, the interferer's rate phases, the
// counted window of each phase, and requests sorted into windows by their
// intended send time.

import t from 'tap'
import { merged, phasesFor, plan, stealOver, windows, windowStats } from '../perf/interleave.js'
import type { Sample } from '../perf/loadgen-common.js'

function sample (intendedMs: number, latencyUs: number, status = 200, flow = 0): Sample {
  const sent = latencyUs < 0 ? 0 : intendedMs + 0.1 // a drop was never sent
  return { flow, intendedMs, sentMs: sent, wireMs: sent === 0 ? 0 : intendedMs + 0.2, latencyUs, status, measured: true }
}

t.test('plan: the cycle repeated, then the closing phase', async (t) => {
  t.same(plan(2, ['alone', 'with'], 'alone'), ['alone', 'with', 'alone', 'with', 'alone'])
  t.same(plan(1, ['a', 'w', 'a', 'f'], 'a'), ['a', 'w', 'a', 'f', 'a'])
})

t.test('phasesFor: the rate only in the phases of the kind, in measured seconds', async (t) => {
  t.same(phasesFor(['alone', 'with', 'alone', 'floor', 'alone'], 'with', 3, 3000), [{ from_s: 3, to_s: 6, rate: 3000 }])
  t.same(phasesFor(['idle', 'busy', 'idle', 'busy', 'idle'], 'busy', 2, 10), [{ from_s: 2, to_s: 4, rate: 10 }, { from_s: 6, to_s: 8, rate: 10 }])
  t.same(phasesFor(['idle'], 'busy', 2, 10), [])
})

t.test('windows: each phase counted from its start plus the settle time to its end', async (t) => {
  const w = windows(['alone', 'with', 'alone'], 10_000, 3, 500, [], new Set(['alone']))
  t.same(w, [
    { index: 0, kind: 'alone', fromMs: 10_500, toMs: 13_000 },
    { index: 1, kind: 'with', fromMs: 13_500, toMs: 16_000 },
    { index: 2, kind: 'alone', fromMs: 16_500, toMs: 19_000 },
  ])
})

t.test('windows: a quiet phase opens only once every earlier interfering request was answered', async (t) => {
  const interferers = [
    sample(13_100, 1_000), // answered at 13,101
    sample(15_900, 2_400_000), // sent in the busy phase, answered at 18,300: a backlog into the next phase
    sample(15_950, -1), // dropped by the generator: never in the server, ignored
    sample(16_200, 10_000_000), // intended after the quiet phase began: not this phase's backlog
  ]
  const w = windows(['idle', 'busy', 'idle'], 10_000, 3, 500, interferers, new Set(['idle']))
  t.equal(w[1]?.fromMs, 13_500, 'a busy phase never waits')
  t.equal(w[2]?.fromMs, 18_300, 'the idle phase after it waits for the backlog')
  t.equal(w[2]?.toMs, 19_000)
})

t.test('windowStats: requests fall into the window of their intended time; errors and outsiders', async (t) => {
  const ws = windows(['alone', 'with', 'alone'], 0, 1, 200, [], new Set(['alone']))
  const samples = [
    sample(100, 900), // inside phase 0's settle time: left out
    sample(300, 1_000),
    sample(700, 3_000),
    sample(1_500, 5_000),
    sample(1_600, 8_000, 429),
    sample(1_700, -1, 0), // dropped
    sample(2_500, 2_000, 200, 1),
    sample(3_000, 1_000), // after the plan: left out
  ]
  const st = windowStats(samples, ws)
  t.same(st.map((s) => s.latency.totalCount), [2, 1, 1], '2xx per window')
  t.same(st.map((s) => s.errors), [0, 2, 0], 'a 429 and a drop in the with phase')
  t.equal(st[1]?.sendLag.totalCount, 2, 'send lag of the requests that were sent (the drop was not)')
  t.equal(st[0]?.latency.maxValue, 3_000)
  // service time: from the write (intended + 0.2 ms) to the answer
  t.ok(Math.abs((st[2]?.service.maxValue ?? 0) - 1_800) <= 2, 'service time leaves out the 0.2 ms before the write')
  const all = merged(st.filter((s) => s.window.kind === 'alone'), (s) => s.latency)
  t.equal(all.totalCount, 3, 'merged alone windows')
})

t.test('stealOver: each second weighted by its overlap; unknown seconds skipped', async (t) => {
  const series = [0, 10, 20, null]
  t.equal(stealOver(series, 1_000, 2_000, 3_000), 10, 'exactly second 1')
  t.equal(stealOver(series, 1_000, 2_500, 3_500), 15, 'half of second 1, half of second 2')
  t.equal(stealOver(series, 1_000, 1_000, 4_000), 10, 'seconds 0..2')
  t.equal(stealOver(series, 1_000, 4_000, 5_000), null, 'only the unknown second')
  t.equal(stealOver(series, 1_000, 9_000, 10_000), null, 'past the series')
})
