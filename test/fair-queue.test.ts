// The weighted fair queue (VTC with weights), tested the way Kubernetes API
// Priority & Fairness tests its queues: a deterministic simulated server (no
// timers, no real time) serves the queue, and each flow's measured share is
// compared with its weighted max-min fair share computed by water-filling.
// Loops check their bound at every step and assert the worst case once, so a
// failure names the step and the suite does not emit thousands of asserts.

import t from 'tap'
import { FairQueue, type FairItem } from '../src/scheduling/fair-queue.js'
import { mulberry32 } from '../scripts/model-specs.js'

interface Req extends FairItem {
  readonly flow: number
  readonly cost: number
  /** Per-flow sequence number: FIFO checks. */
  readonly seq: number
}

function uniformInt (lo: number, hi: number, seed: number): () => number {
  const r = mulberry32(seed)
  return () => lo + Math.floor(r() * (hi - lo + 1))
}

/**
 * Weighted max-min fair allocation of `capacity` (water-filling): a flow whose
 * demand is below its weighted share gets its demand, the rest is re-split by
 * weight among the others. Demand Infinity = always backlogged.
 */
function maxMinFair (demands: readonly number[], weights: readonly number[], capacity: number): number[] {
  const alloc = demands.map(() => 0)
  const open = new Set(demands.map((_, i) => i))
  let left = capacity
  while (open.size > 0 && left > 1e-12) {
    let wsum = 0
    for (const i of open) wsum += weights[i] as number
    const level = left / wsum
    let capped = false
    for (const i of [...open]) {
      const want = (demands[i] as number) - (alloc[i] as number)
      if (want <= level * (weights[i] as number)) {
        alloc[i] = demands[i] as number
        left -= want
        open.delete(i)
        capped = true
      }
    }
    if (!capped) {
      for (const i of open) alloc[i] = (alloc[i] as number) + level * (weights[i] as number)
      left = 0
    }
  }
  return alloc
}

function jain (xs: readonly number[]): number {
  let s = 0
  let s2 = 0
  for (const x of xs) { s += x; s2 += x * x }
  return (s * s) / (xs.length * s2)
}

const fmt = (xs: readonly number[], d = 4): string => '[' + xs.map((x) => x.toFixed(d)).join(', ') + ']'

interface BackloggedRun {
  /** Items served per flow. */
  readonly served: number[]
  /** Service (sum of cost) per flow. */
  readonly service: number[]
  /** Worst |S_f/w_f − S_g/w_g| over all pairs, over all steps. */
  readonly maxNormGap: number
  /** Jain's index of normalised service at every checkpoint: the worst one. */
  readonly minJain: number
}

/**
 * Every flow stays backlogged (two items queued; a served item is replaced at
 * once); the simulated server pops `pops` times. All flows start at counter 0.
 */
function runBacklogged (weights: readonly number[], costs: ReadonlyArray<() => number>, pops: number, checkpoint = 1000): BackloggedRun {
  const q = new FairQueue<Req>((f) => weights[f] as number)
  const n = weights.length
  const next = new Array<number>(n).fill(0)
  const expect = new Array<number>(n).fill(0)
  const push = (flow: number): void => q.push({ flow, cost: (costs[flow] as () => number)(), seq: next[flow]!++ })
  for (let f = 0; f < n; f++) { push(f); push(f) }
  const served = new Array<number>(n).fill(0)
  const service = new Array<number>(n).fill(0)
  let maxNormGap = 0
  let minJain = 1
  for (let i = 1; i <= pops; i++) {
    const r = q.pop() as Req
    if (r.seq !== expect[r.flow]) throw new Error(`FIFO broken in flow ${r.flow} at pop ${i}`)
    expect[r.flow]!++
    served[r.flow]!++
    service[r.flow]! += r.cost
    push(r.flow)
    let lo = Infinity
    let hi = -Infinity
    for (let f = 0; f < n; f++) {
      const norm = (service[f] as number) / (weights[f] as number)
      if (norm < lo) lo = norm
      if (norm > hi) hi = norm
    }
    if (hi - lo > maxNormGap) maxNormGap = hi - lo
    if (i % checkpoint === 0) minJain = Math.min(minJain, jain(service.map((s, f) => s / (weights[f] as number))))
  }
  return { served, service, maxNormGap, minJain }
}

function relErrors (got: readonly number[], want: readonly number[]): number[] {
  return got.map((g, i) => Math.abs(g / (want[i] as number) - 1))
}

t.test('1. backlogged flows, equal costs: served share within 1% of the weighted fair share', async (t) => {
  for (const weights of [[1, 1, 1], [1, 2, 4], [3, 1, 1, 5]]) {
    const pops = 70_000
    const run = runBacklogged(weights, weights.map(() => () => 1), pops)
    const total = run.served.reduce((a, b) => a + b, 0)
    const share = run.served.map((s) => s / total)
    const fair = maxMinFair(weights.map(() => Infinity), weights, 1)
    const err = relErrors(share, fair)
    t.comment(`weights ${JSON.stringify(weights)}: served share ${fmt(share)} fair ${fmt(fair)} max rel. error ${(Math.max(...err) * 100).toFixed(4)}%`)
    t.ok(Math.max(...err) <= 0.01, `weights ${JSON.stringify(weights)} within 1%`)
  }
})

// Shared by tests 2 and 5: flow A always costs 1, B always 8, C uniform 1..16.
const MIXED: ReadonlyArray<() => () => number> = [() => () => 1, () => () => 8, () => uniformInt(1, 16, 42)]
const MAX_COST = 16

t.test('2. mixed costs: service share within 5% of the weighted fair share; normalised gap ≤ max cost / min weight', async (t) => {
  for (const weights of [[1, 1, 1], [1, 2, 4], [4, 2, 1]]) {
    const run = runBacklogged(weights, MIXED.map((mk) => mk()), 100_000)
    const total = run.service.reduce((a, b) => a + b, 0)
    const share = run.service.map((s) => s / total)
    const fair = maxMinFair(weights.map(() => Infinity), weights, 1)
    const err = relErrors(share, fair)
    const bound = MAX_COST / Math.min(...weights)
    t.comment(`weights ${JSON.stringify(weights)} costs A=1 B=8 C=U(1..16): service share ${fmt(share)} fair ${fmt(fair)} max rel. error ${(Math.max(...err) * 100).toFixed(4)}%`)
    t.comment(`  worst normalised-service gap over all pairs and steps ${run.maxNormGap.toFixed(3)} (bound ${bound})`)
    t.ok(Math.max(...err) <= 0.05, 'within 5%')
    t.ok(run.maxNormGap <= bound + 1e-6, 'pairwise normalised service gap within max cost / min weight at every step')
  }
})

t.test('3. Jain\'s fairness index ≥ 0.99 over normalised service, equal weights', async (t) => {
  // Ten flows, each with its own cost distribution (fixed 1..10, or uniform
  // ranges of different widths); index checked every 1000 pops.
  const costs: Array<() => number> = []
  for (let f = 0; f < 10; f++) costs.push(f % 2 === 0 ? ((c) => () => c)(f + 1) : uniformInt(1, 4 * f, 100 + f))
  const weights = costs.map(() => 1)
  const run = runBacklogged(weights, costs, 100_000)
  const j = jain(run.service)
  t.comment(`final Jain index ${j.toFixed(6)}, worst over checkpoints ${run.minJain.toFixed(6)}; service ${JSON.stringify(run.service)}`)
  t.ok(run.minJain >= 0.99, 'Jain ≥ 0.99 at every checkpoint')
  // Weighted variant: the index of service / weight is what fairness means there.
  const w2 = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
  const run2 = runBacklogged(w2, costs.map((_, f) => f % 2 === 0 ? ((c) => () => c)(f + 1) : uniformInt(1, 4 * f, 100 + f)), 100_000)
  t.comment(`weights ${JSON.stringify(w2)}: worst Jain index of service/weight ${run2.minJain.toFixed(6)}`)
  t.ok(run2.minJain >= 0.99, 'weighted: Jain ≥ 0.99 over service/weight')
})

/**
 * Simulated single server with a clock: serving an item takes `cost` time
 * units. Open-loop flows push a request of cost 1 every `period` time units;
 * the others stay backlogged. Returns service per flow, arrivals per flow and
 * the worst queueing delay per flow.
 */
function runClock (weights: readonly number[], periods: ReadonlyArray<number | null>, horizon: number): { service: number[], arrivals: number[], served: number[], maxWait: number[] } {
  interface Timed extends Req { readonly at: number }
  const q = new FairQueue<Timed>((f) => weights[f] as number)
  const n = weights.length
  const nextArrival = periods.map((p) => p === null ? Infinity : 0)
  const seq = new Array<number>(n).fill(0)
  const arrivals = new Array<number>(n).fill(0)
  const served = new Array<number>(n).fill(0)
  const service = new Array<number>(n).fill(0)
  const maxWait = new Array<number>(n).fill(0)
  let now = 0
  const push = (flow: number, at: number): void => { q.push({ flow, cost: 1, seq: seq[flow]!++, at }); arrivals[flow]!++ }
  for (let f = 0; f < n; f++) if (periods[f] === null) { push(f, 0); push(f, 0) }
  while (now < horizon) {
    for (let f = 0; f < n; f++) {
      while ((nextArrival[f] as number) <= now) { push(f, nextArrival[f] as number); nextArrival[f]! += periods[f] as number }
    }
    const r = q.pop()
    if (r === null) { now = Math.min(...nextArrival); continue }
    maxWait[r.flow] = Math.max(maxWait[r.flow] as number, now - r.at)
    now += r.cost
    served[r.flow]!++
    service[r.flow]! += r.cost
    if (periods[r.flow] === null) push(r.flow, now)
  }
  return { service, arrivals, served, maxWait }
}

t.test('4. max-min: a flow demanding less than its fair share gets all it asks, the rest splits by weight', async (t) => {
  const cases: Array<{ weights: number[], periods: Array<number | null> }> = [
    // A wants 0.1 of the server, its share would be 0.25: B and C split 0.9 as 1:2.
    { weights: [1, 1, 2], periods: [10, null, null] },
    // A (weight 4) wants 0.2 of a 4/6 share; B and C get 0.4 each.
    { weights: [4, 1, 1], periods: [5, null, null] },
    // Two light flows, one heavy backlogged pair of unequal weight.
    { weights: [1, 1, 1, 3], periods: [20, 8, null, null] },
  ]
  const horizon = 200_000
  for (const { weights, periods } of cases) {
    const run = runClock(weights, periods, horizon)
    const demands = periods.map((p) => p === null ? Infinity : 1 / p)
    const fair = maxMinFair(demands, weights, 1)
    const share = run.service.map((s) => s / horizon)
    const err = relErrors(share, fair)
    t.comment(`weights ${JSON.stringify(weights)} demand ${fmt(demands)}: got ${fmt(share)} fair ${fmt(fair)} max rel. error ${(Math.max(...err) * 100).toFixed(3)}%; worst wait of the light flows ${JSON.stringify(run.maxWait.filter((_, f) => periods[f] !== null))} time units`)
    for (let f = 0; f < weights.length; f++) {
      if (periods[f] !== null) {
        // All it asked: every arrival served except at most the one arriving at the horizon.
        t.ok((run.arrivals[f] as number) - (run.served[f] as number) <= 1, `light flow ${f} served ${run.served[f]} of ${run.arrivals[f]} requests`)
      }
    }
    t.ok(Math.max(...err) <= 0.01, 'every flow within 1% of its max-min share')
  }
})

t.test('5. no idle-credit banking: a returning flow gets its weighted share, not a burst; gap bound at every step', async (t) => {
  const weights = [1, 2] // A, B
  const q = new FairQueue<Req>((f) => weights[f] as number)
  const costA = uniformInt(1, 8, 7)
  const costB = uniformInt(1, 8, 8)
  const maxCost = 8
  const seq = [0, 0]
  const push = (flow: number): void => q.push({ flow, cost: flow === 0 ? costA() : costB(), seq: seq[flow]!++ })
  // Phase 1: both backlogged for a while, then A's queue drains.
  for (let i = 0; i < 100; i++) push(0)
  push(1); push(1)
  while (q.flowSize(0) > 0) { const r = q.pop() as Req; if (r.flow === 1) push(1) }
  // Phase 2: A idle while B alone is served for a long time.
  for (let i = 0; i < 50_000; i++) { q.pop(); push(1) }
  const aBefore = q.counter(0)
  const bNow = q.counter(1)
  // Phase 3: A returns with a deep backlog.
  for (let i = 0; i < 20_000; i++) push(0)
  t.comment(`A's counter while idle ${aBefore.toFixed(1)}, B's ${bNow.toFixed(1)}; A lifted to ${q.counter(0).toFixed(1)} (without the lift A would have had ~${((bNow - aBefore) * weights[0]!).toFixed(0)} cost units of exclusive service)`)
  t.equal(q.counter(0), bNow, 'A is lifted to the only backlogged flow\'s counter')

  const window = 20_000
  const service = [0, 0]
  const first100 = [0, 0]
  let bGap = 0
  let sinceB = 0
  let maxNormGap = 0
  for (let i = 0; i < window; i++) {
    const r = q.pop() as Req
    service[r.flow]! += r.cost
    if (i < 100) first100[r.flow]! += r.cost
    if (r.flow === 1) { push(1); sinceB = 0 } else bGap = Math.max(bGap, ++sinceB)
    maxNormGap = Math.max(maxNormGap, Math.abs(service[0]! / weights[0]! - service[1]! / weights[1]!))
  }
  const share = service[0]! / (service[0]! + service[1]!)
  const share100 = first100[0]! / (first100[0]! + first100[1]!)
  const bound = maxCost / Math.min(...weights)
  t.comment(`after A returns: A's service share over the first 100 pops ${share100.toFixed(4)}, over ${window} pops ${share.toFixed(4)} (weight share ${(1 / 3).toFixed(4)}); longest run of pops without B ${bGap}; worst normalised gap ${maxNormGap.toFixed(3)} (bound ${bound})`)
  t.ok(Math.abs(share - 1 / 3) <= 0.01, 'A\'s share over the window within ±0.01 of 1/3')
  t.ok(Math.abs(share100 - 1 / 3) <= 0.1, 'no burst: A\'s share over the first 100 pops within ±0.1 of 1/3')
  // With costs ≤ 8 and weights 1:2, A pops at most cost_B_max·w_A/w_B/min cost_A + 1 = 8·(1/2)/1 + 1 = 5 times in a row.
  t.ok(bGap <= 5, 'B is never passed over more than 5 pops in a row')
  t.ok(maxNormGap <= bound + 1e-6, 'normalised service gap ≤ max cost / min weight at every step')
})

t.test('6. no starvation: a weight-1 flow among weight-100 flows', async (t) => {
  // 128 is exact in binary, so counters tie exactly; 1/100 is not, and
  // rounding lets a heavy flow in once more per round.
  for (const hw of [100, 128]) {
    const heavy = 10
    const weights = [...new Array<number>(heavy).fill(hw), 1]
    const light = heavy
    const q = new FairQueue<Req>((f) => weights[f] as number)
    const seq = new Array<number>(weights.length).fill(0)
    const push = (flow: number): void => q.push({ flow, cost: 1, seq: seq[flow]!++ })
    for (let f = 0; f < weights.length; f++) { push(f); push(f) }
    const wsum = weights.reduce((a, b) => a + b, 0)
    // Between two services of the light flow (its counter advances 1) each
    // heavy flow is served while its counter (step 1/hw) is within that unit:
    // ≤ hw + 1 times (the +1 for an equal counter or float rounding). So the
    // distance between consecutive light pops is ≤ Σ_heavy (w/1 + 1) + 1 =
    // sum of weights / 1 + number of heavy flows.
    const bound = wsum / weights[light]! + heavy
    const pops = 500_000
    let last = -1
    let maxGap = 0
    let lightServed = 0
    for (let i = 0; i < pops; i++) {
      const r = q.pop() as Req
      push(r.flow)
      if (r.flow === light) { maxGap = Math.max(maxGap, i - last); last = i; lightServed++ }
    }
    maxGap = Math.max(maxGap, pops - last)
    t.comment(`heavy weight ${hw} ×${heavy}: light flow served ${lightServed} times in ${pops} pops (share ${(lightServed / pops).toFixed(6)}, fair ${(1 / wsum).toFixed(6)}); longest distance between its services ${maxGap} pops (sum of weights / 1 = ${wsum}; bound verified ${bound})`)
    t.ok(maxGap <= bound, `light flow served at least once in every ${bound} pops`)
    t.ok(lightServed >= Math.floor(pops / wsum), 'and at least its fair count')
  }
})

t.test('7a. charge with the real cost changes the order', async (t) => {
  const weights = [1, 1, 2, 1]
  const q = new FairQueue<Req>((f) => weights[f] as number)
  for (let s = 0; s < 8; s++) for (const flow of [0, 1]) q.push({ flow, cost: 1, seq: s })
  t.same([(q.pop() as Req).flow, (q.pop() as Req).flow], [0, 1], 'equal counters go in arrival order')
  // Flow 0's request really cost 6, not the estimated 1: it owes 5 more.
  q.charge(0, 5)
  t.equal(q.counter(0), 6)
  const next: number[] = []
  for (let i = 0; i < 6; i++) next.push((q.pop() as Req).flow)
  t.same(next, [1, 1, 1, 1, 1, 0], 'the undercharged flow waits until the other catches up (at a tie, the flow that got there first)')
  t.same([q.counter(0), q.counter(1)], [7, 6])
  t.equal((q.peek() as Req).flow, 1)
  // A negative correction (the estimate was too high) moves a backlogged flow forward at once.
  q.charge(0, -3)
  t.equal(q.counter(0), 4)
  t.equal((q.peek() as Req).flow, 0, 'the corrected flow is now first')
  // charge divides by the flow's weight; on an idle flow it waits for the lift.
  q.charge(2, 4)
  t.equal(q.counter(2), 2, 'delta 4 at weight 2 adds 2')
  q.push({ flow: 2, cost: 1, seq: 0 })
  t.equal(q.counter(2), 4, 'an idle flow below the minimum backlogged counter (4) is lifted to it')
  q.charge(3, 10)
  q.push({ flow: 3, cost: 1, seq: 0 })
  t.equal(q.counter(3), 10, 'one above the minimum keeps its own counter')
  const q2 = new FairQueue<Req>(() => 1)
  q2.push({ flow: 0, cost: 10, seq: 0 })
  q2.pop()
  q2.push({ flow: 0, cost: 10, seq: 1 })
  t.equal(q2.counter(0), 10)
  q2.charge(3, -100) // credit from a correction is not banked across idle time either
  q2.push({ flow: 3, cost: 1, seq: 0 })
  t.equal(q2.counter(3), 10, 'an idle flow with a negative counter is lifted to the minimum')
  // Nothing backlogged: a returning flow is lifted to the counter the last pop was served at.
  const q3 = new FairQueue<Req>(() => 1)
  q3.push({ flow: 0, cost: 50, seq: 0 })
  q3.pop()
  q3.push({ flow: 1, cost: 1, seq: 0 })
  q3.push({ flow: 0, cost: 1, seq: 1 })
  t.same([q3.counter(0), q3.counter(1)], [50, 0], 'the first flow back after an empty queue starts at the last served counter (0), the other keeps 50')
  t.throws(() => q2.charge(0, NaN), RangeError)
  t.throws(() => q2.push({ flow: 0, cost: -1, seq: 9 }), RangeError)
  t.throws(() => q2.push({ flow: 1.5, cost: 1, seq: 9 }), RangeError)
  const bad = new FairQueue<Req>(() => 0)
  bad.push({ flow: 0, cost: 1, seq: 0 })
  t.throws(() => bad.pop(), RangeError, 'weight 0 is refused')
  t.equal(bad.size, 1, 'and the queue is left intact')
})

t.test('7b. removeWhere removes exactly the matching items, keeps FIFO of the rest, charges nothing', async (t) => {
  const q = new FairQueue<Req>(() => 1)
  // Five flows of 8 items in rings of 8 whose head sits at 5, so the live
  // region wraps and compaction crosses the end of the buffer.
  for (let f = 0; f < 5; f++) for (let s = 0; s < 8; s++) q.push({ flow: f, cost: 1, seq: s })
  for (let i = 0; i < 25; i++) q.pop()
  const seq = [8, 8, 8, 8, 8]
  for (let f = 0; f < 5; f++) {
    while (q.flowSize(f) < 8) q.push({ flow: f, cost: 1, seq: seq[f]!++ })
  }
  const counters = [0, 1, 2, 3, 4].map((f) => q.counter(f))
  const before = q.size
  // Remove: every odd seq of flow 0, all of flow 2, nothing of the others.
  const pred = (r: Req): boolean => (r.flow === 0 && r.seq % 2 === 1) || r.flow === 2
  const removed: Req[] = []
  const n = q.removeWhere(pred, (r) => removed.push(r))
  t.equal(n, removed.length, 'returns how many it removed')
  t.equal(q.size, before - n)
  t.ok(removed.every(pred), 'only matching items removed')
  t.equal(removed.filter((r) => r.flow === 2).length, 8, 'all of flow 2')
  t.same(removed.filter((r) => r.flow === 0).map((r) => r.seq), [5, 7, 9, 11], 'odd seqs of flow 0, in order')
  t.equal(q.flowSize(2), 0)
  t.same([0, 1, 2, 3, 4].map((f) => q.counter(f)), counters, 'removed items are not charged')
  const rest: Req[] = []
  for (let r = q.pop(); r !== null; r = q.pop()) rest.push(r)
  t.notOk(rest.some(pred), 'no matching item left')
  t.equal(rest.length + n, before, 'nothing lost')
  for (let f = 0; f < 5; f++) {
    const s = rest.filter((r) => r.flow === f).map((r) => r.seq)
    t.same(s, [...s].sort((a, b) => a - b), `flow ${f} still FIFO`)
  }
  t.equal(q.removeWhere(() => true, () => t.fail('nothing to remove')), 0, 'empty queue: 0')
  // onRemoved runs once the queue is consistent, so it may push.
  q.push({ flow: 0, cost: 1, seq: 100 })
  q.push({ flow: 1, cost: 1, seq: 100 })
  q.removeWhere((r) => r.flow === 0, (r) => q.push({ flow: 3, cost: 1, seq: r.seq }))
  t.same([q.flowSize(0), q.flowSize(1), q.flowSize(3), q.size], [0, 1, 1, 2])
  const left = [q.pop(), q.pop(), q.pop()].map((r) => r?.flow ?? null)
  t.same(left.slice(0, 2).sort(), [1, 3], 'heap consistent after removal and re-push')
  t.equal(left[2], null)
})

t.test('7c. random operations keep every invariant (heap order, FIFO, lift, size)', async (t) => {
  // Checks each op against a brute-force view of the queue's own state:
  // popped flow has the minimum counter among backlogged flows, pushes to an
  // empty flow lift it to ≥ the minimum, FIFO per flow, size = Σ flowSize.
  const F = 40
  const rnd = mulberry32(2024)
  const weights = Array.from({ length: F }, () => 1 + Math.floor(rnd() * 8))
  const q = new FairQueue<Req>((f) => weights[f] as number)
  const nextSeq = new Array<number>(F).fill(0)
  const expect = new Array<number>(F).fill(0)
  const removedSeqs = Array.from({ length: F }, () => new Set<number>())
  let violations = 0
  const note = (msg: string): void => { if (violations++ < 5) t.fail(msg) }
  const ops = 30_000
  const trace: number[] = []
  for (let op = 0; op < ops; op++) {
    const x = rnd()
    if (x < 0.5) {
      const flow = Math.floor(rnd() * rnd() * F) // skewed: low flows busier
      let min = Infinity
      for (let f = 0; f < F; f++) if (q.flowSize(f) > 0) min = Math.min(min, q.counter(f))
      const was = q.counter(flow)
      const empty = q.flowSize(flow) === 0
      q.push({ flow, cost: 1 + Math.floor(rnd() * 20), seq: nextSeq[flow]!++ })
      if (empty && min !== Infinity && q.counter(flow) !== Math.max(was, min)) note(`op ${op}: lift of flow ${flow} wrong`)
    } else if (x < 0.9) {
      let min = Infinity
      for (let f = 0; f < F; f++) if (q.flowSize(f) > 0) min = Math.min(min, q.counter(f))
      const peeked = q.peek()
      const r = q.pop()
      if (r !== peeked) note(`op ${op}: peek and pop disagree`)
      if (r === null) { if (min !== Infinity) note(`op ${op}: pop null with items queued`); continue }
      trace.push(r.flow)
      // Counter before this pop = after − cost/weight.
      const c = q.counter(r.flow) - r.cost / (weights[r.flow] as number)
      if (Math.abs(c - min) > 1e-9 * Math.max(1, Math.abs(min))) note(`op ${op}: popped flow ${r.flow} at ${c}, min was ${min}`)
      while (removedSeqs[r.flow]!.has(expect[r.flow] as number)) expect[r.flow]!++
      if (r.seq !== expect[r.flow]) note(`op ${op}: FIFO broken in flow ${r.flow}`)
      expect[r.flow] = r.seq + 1
    } else if (x < 0.97) {
      q.charge(Math.floor(rnd() * F), (rnd() - 0.4) * 30)
    } else {
      const cut = rnd()
      q.removeWhere((r) => ((r.seq * 2654435761) >>> 0) / 4294967296 < cut * 0.3, (r) => removedSeqs[r.flow]!.add(r.seq))
    }
    let sum = 0
    for (let f = 0; f < F; f++) sum += q.flowSize(f)
    if (sum !== q.size) note(`op ${op}: size ${q.size} ≠ Σ flowSize ${sum}`)
  }
  t.equal(violations, 0, `no invariant violated in ${ops} random operations (${trace.length} pops)`)
})

t.test('7c\'. same pop order as a brute-force reference model, with exact counter ties', async (t) => {
  // Reference: linear scan for the smallest (counter, stamp) among backlogged
  // flows, same lift and stamp rules. Weights are powers of two and costs and
  // corrections integers, so counters tie exactly and the tie-break is tested.
  interface M { counter: number, stamp: number, items: Req[] }
  const F = 24
  const rnd = mulberry32(77)
  const weights = Array.from({ length: F }, () => 2 ** Math.floor(rnd() * 4))
  const q = new FairQueue<Req>((f) => weights[f] as number)
  const model: M[] = Array.from({ length: F }, () => ({ counter: 0, stamp: 0, items: [] }))
  let stamp = 0
  let floor = 0
  const minFlow = (): number => {
    let best = -1
    for (let f = 0; f < F; f++) {
      const m = model[f] as M
      if (m.items.length === 0) continue
      const b = model[best] as M | undefined
      if (b === undefined || m.counter < b.counter || (m.counter === b.counter && m.stamp < b.stamp)) best = f
    }
    return best
  }
  const nextSeq = new Array<number>(F).fill(0)
  let mismatches = 0
  let pops = 0
  let ties = 0
  const ops = 40_000
  for (let op = 0; op < ops && mismatches === 0; op++) {
    const x = rnd()
    if (x < 0.5) {
      const flow = Math.floor(rnd() * rnd() * F)
      const item: Req = { flow, cost: Math.floor(rnd() * 9), seq: nextSeq[flow]!++ }
      const m = model[flow] as M
      if (m.items.length === 0) {
        const b = minFlow()
        const min = b < 0 ? floor : (model[b] as M).counter
        if (m.counter < min) m.counter = min
        m.stamp = stamp++
      }
      m.items.push(item)
      q.push(item)
    } else if (x < 0.88) {
      const b = minFlow()
      const got = q.pop()
      if (b < 0) { if (got !== null) mismatches++; continue }
      pops++
      const m = model[b] as M
      for (let f = 0; f < F; f++) if (f !== b && (model[f] as M).items.length > 0 && (model[f] as M).counter === m.counter) { ties++; break }
      const want = m.items.shift() as Req
      if (m.counter > floor) floor = m.counter
      m.counter += want.cost / (weights[b] as number)
      if (m.items.length > 0) m.stamp = stamp++
      if (got !== want) { mismatches++; t.fail(`op ${op}: popped flow ${got?.flow} seq ${got?.seq}, reference flow ${b} seq ${want.seq}`) }
    } else if (x < 0.97) {
      const flow = Math.floor(rnd() * F)
      const delta = Math.floor(rnd() * 13) - 6
      q.charge(flow, delta)
      const m = model[flow] as M
      if (delta !== 0) {
        m.counter += delta / (weights[flow] as number)
        if (m.items.length > 0) m.stamp = stamp++
      }
    } else {
      const mod = 2 + Math.floor(rnd() * 5)
      const pred = (r: Req): boolean => r.seq % mod === 0
      q.removeWhere(pred, () => {})
      for (const m of model) m.items = m.items.filter((r) => !pred(r))
    }
  }
  t.comment(`${pops} pops compared, ${ties} of them with another backlogged flow at an equal counter`)
  t.equal(mismatches, 0, 'pop order identical to the reference model')
  t.ok(ties > 100, 'ties were exercised')
})

t.test('7d. deterministic: the same inputs give the same order', async (t) => {
  const order = (): number[] => {
    const run = runBacklogged([1, 3, 2, 2], [uniformInt(1, 9, 1), () => 4, uniformInt(2, 3, 5), () => 3], 2000)
    return run.served
  }
  t.same(order(), order())
})

t.test('8. 1e5 items through 1000 flows: works and empties cleanly', async (t) => {
  const F = 1000
  const N = 100_000
  const weights = Array.from({ length: F }, (_, f) => 1 + (f % 7))
  const q = new FairQueue<Req>((f) => weights[f] as number)
  const rnd = mulberry32(99)
  const nextSeq = new Array<number>(F).fill(0)
  const expect = new Array<number>(F).fill(0)
  let pushed = 0
  let popped = 0
  let fifoOk = true
  const t0 = process.hrtime.bigint()
  const popOne = (): void => {
    const r = q.pop() as Req
    if (r.seq !== expect[r.flow]) fifoOk = false
    expect[r.flow]!++
    popped++
  }
  // Push 3, pop 2 until all are in (rings wrap and grow), then drain.
  while (pushed < N) {
    for (let k = 0; k < 3 && pushed < N; k++) {
      const flow = Math.floor(rnd() * F)
      q.push({ flow, cost: 1 + Math.floor(rnd() * 16), seq: nextSeq[flow]!++ })
      pushed++
    }
    if (q.size > 0) popOne()
    if (q.size > 0) popOne()
  }
  const peakish = q.size
  while (q.size > 0) popOne()
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  t.comment(`${N} pushes and pops across ${F} flows in ${ms.toFixed(1)} ms (${(ms * 1e6 / (2 * N)).toFixed(0)} ns/op), ${peakish} queued before the drain`)
  t.equal(popped, N, 'every item popped once')
  t.ok(fifoOk, 'FIFO within every flow')
  t.equal(q.size, 0)
  t.ok(Array.from({ length: F }, (_, f) => q.flowSize(f)).every((s) => s === 0), 'every flowSize 0')
  t.equal(q.peek(), null)
  t.equal(q.pop(), null)
})
