// Weighted fair queue across flows (tenants), after VTC (Sheng et al.,
// "Fairness in Serving Large Language Models", OSDI'24), with weights.
//
// Each flow has a virtual counter: the service it was charged divided by its
// weight. The next item is the FIFO head of the backlogged flow with the
// smallest counter; popping charges that flow cost / weight, and `charge`
// corrects the estimate once the real service is known. A flow that goes from
// empty to backlogged is lifted to the smallest counter among the backlogged
// flows (when none is backlogged: to the counter the last pop was served at),
// and keeps its own counter if that is higher. So time spent idle banks no
// credit: a returning flow competes from where the others are now, not from
// where it left, and cannot lock the others out with a burst.
//
// Invariants (test/fair-queue.test.ts checks each):
//  - FIFO within a flow; across flows, the popped item's flow has the smallest
//    counter among backlogged flows (ties: the flow that reached that counter
//    first, by a sequence stamp, so order is deterministic and equal counters
//    round-robin instead of favouring low flow ids).
//  - With costs charged exactly, the counters of any two backlogged flows
//    differ by at most U = max over items of cost / weight of its flow. Hence
//    two flows backlogged together from equal counters receive normalised
//    service (service / weight) differing by at most U ≤ max cost / min weight
//    at every step; over a long run each gets its weighted max-min fair share.
//  - A flow of weight w among others of total weight W (equal costs) is served
//    at least once in every W / w + (number of flows) pops: no starvation.
//  - `removeWhere` charges nothing: a request that expired in the queue costs
//    its tenant no share.
//
// Costs: push O(log F), pop O(log F) with F the number of backlogged flows (an
// indexed binary min-heap of flows keyed by counter); peek, size O(1);
// charge O(log F); removeWhere O(n + F). Per-flow queues are power-of-two ring
// buffers that double when full and never shrink, so steady state allocates
// nothing and a flow's memory is its peak backlog (bounded by the tenant's
// queue-depth cap at admission).
//
// Counters only grow (apart from negative corrections) and are never rebased:
// a double keeps sub-µs resolution up to ~1e9 s of µs-costs, far beyond a
// process lifetime. A weight change (weightOf is read at every charge) applies
// to later charges only; past service stays normalised by the old weight.

/** What the queue needs of an item. */
export interface FairItem {
  /** Flow (tenant slot): a small non-negative integer; per-flow state is an array indexed by it. */
  readonly flow: number
  /** Estimated service, finite and ≥ 0, in one unit across the queue (the scheduler uses µs). */
  readonly cost: number
}

interface Flow<T> {
  readonly id: number
  /** Normalised service charged so far (plus lifts). */
  counter: number
  /** Sequence number of the last change of `counter` while backlogged: the heap's tie-break. */
  stamp: number
  /** Index in the heap; -1 while the flow is empty. */
  pos: number
  /** Ring buffer, length a power of two; empty slots hold undefined so popped items can be collected. */
  buf: (T | undefined)[]
  head: number
  len: number
}

const INITIAL_RING = 4

export class FairQueue<T extends FairItem> {
  private readonly weightOf: (flow: number) => number
  private readonly flows: (Flow<T> | undefined)[] = []
  /** Backlogged flows, binary min-heap by (counter, stamp). */
  private readonly heap: Flow<T>[] = []
  private total = 0
  private seq = 0
  /** Counter the most recent pop was served at: the lift target when no flow is backlogged. */
  private floor = 0

  /**
   * `weightOf(flow)` must return a finite weight > 0; it is called at every
   * pop and charge, so a live weight change takes effect at once.
   */
  constructor (weightOf: (flow: number) => number) {
    this.weightOf = weightOf
  }

  /** Items queued across all flows. */
  get size (): number {
    return this.total
  }

  /** Items queued for `flow`. */
  flowSize (flow: number): number {
    return this.flows[flow]?.len ?? 0
  }

  /** The flow's virtual counter (normalised service); 0 for a flow never seen. For tests and metrics. */
  counter (flow: number): number {
    return this.flows[flow]?.counter ?? 0
  }

  /**
   * Appends the item to its flow's FIFO. A flow going from empty to backlogged
   * is lifted to the smallest backlogged counter (see the header). Throws
   * RangeError on a negative or non-finite cost or a flow that is not a
   * non-negative integer: one NaN counter would corrupt the order for good.
   */
  push (item: T): void {
    const cost = item.cost
    if (!(cost >= 0 && cost < Infinity)) throw new RangeError(`fair-queue: cost must be finite and >= 0, got ${cost}`)
    const f = this.flows[item.flow] ?? this.addFlow(item.flow)
    if (f.len === f.buf.length) grow(f)
    f.buf[(f.head + f.len) & (f.buf.length - 1)] = item
    f.len++
    this.total++
    if (f.len === 1) {
      const top = this.heap[0]
      const min = top === undefined ? this.floor : top.counter
      if (f.counter < min) f.counter = min
      f.stamp = this.seq++
      f.pos = this.heap.length
      this.heap.push(f)
      this.up(f.pos)
    }
  }

  /** The next item in fair order, left in place; null when empty. */
  peek (): T | null {
    const f = this.heap[0]
    return f === undefined ? null : f.buf[f.head] as T
  }

  /** Removes the next item in fair order and charges its flow cost / weight; null when empty. */
  pop (): T | null {
    const f = this.heap[0]
    if (f === undefined) return null
    const item = f.buf[f.head] as T
    // Before any change, so a bad weight throws with the queue intact.
    const w = this.weight(f.id)
    f.buf[f.head] = undefined
    f.head = (f.head + 1) & (f.buf.length - 1)
    f.len--
    this.total--
    if (f.counter > this.floor) this.floor = f.counter
    f.counter += item.cost / w
    if (f.len === 0) {
      f.head = 0
      this.removeAt(0)
    } else {
      f.stamp = this.seq++
      this.down(0)
    }
    return item
  }

  /**
   * Adds `delta` (same unit as cost; may be negative) / weight to the flow's
   * counter: the correction once the real service of a popped item is known.
   * A backlogged flow moves in the order at once; an idle one carries the
   * correction until it returns, where the lift may absorb a credit (idle
   * time banks nothing, corrections included).
   */
  charge (flow: number, delta: number): void {
    if (!Number.isFinite(delta)) throw new RangeError(`fair-queue: charge must be finite, got ${delta}`)
    if (delta === 0) return
    const f = this.flows[flow] ?? this.addFlow(flow)
    f.counter += delta / this.weight(flow)
    if (f.pos >= 0) {
      // One direction suffices: a higher counter and a newer stamp both move
      // it later; a lower counter is strictly below every descendant's (they
      // were ≥ the old one), so its newer stamp cannot matter.
      f.stamp = this.seq++
      if (delta > 0) this.down(f.pos)
      else this.up(f.pos)
    }
  }

  /**
   * Removes every item for which `pred` is true (the deadline sweep), keeping
   * the FIFO order of the rest, and returns how many went. Removed items are
   * not charged. `onRemoved` runs for each after the queue is consistent again,
   * so it may push or pop; `pred` must not throw or touch the queue (it runs
   * mid-compaction). O(n + F); allocates only when something is removed.
   */
  removeWhere (pred: (item: T) => boolean, onRemoved: (item: T) => void): number {
    let removed: T[] | null = null
    let emptied = false
    for (const f of this.heap) {
      const mask = f.buf.length - 1
      let kept = 0
      for (let r = 0; r < f.len; r++) {
        const item = f.buf[(f.head + r) & mask] as T
        if (pred(item)) (removed ??= []).push(item)
        else f.buf[(f.head + kept++) & mask] = item
      }
      if (kept === f.len) continue
      for (let r = kept; r < f.len; r++) f.buf[(f.head + r) & mask] = undefined
      this.total -= f.len - kept
      f.len = kept
      if (kept === 0) {
        f.head = 0
        f.pos = -1
        emptied = true
      }
    }
    if (emptied) {
      // Drop emptied flows and re-heapify (Floyd, O(F)): counters did not
      // change, but removing arbitrary entries breaks the heap shape.
      const h = this.heap
      let n = 0
      for (const f of h) if (f.pos >= 0) { f.pos = n; h[n++] = f }
      h.length = n
      for (let i = (n >> 1) - 1; i >= 0; i--) this.down(i)
    }
    if (removed === null) return 0
    for (const item of removed) onRemoved(item)
    return removed.length
  }

  private addFlow (flow: number): Flow<T> {
    if (!Number.isInteger(flow) || flow < 0) throw new RangeError(`fair-queue: flow must be a non-negative integer, got ${flow}`)
    const f: Flow<T> = { id: flow, counter: 0, stamp: 0, pos: -1, buf: new Array<T | undefined>(INITIAL_RING).fill(undefined), head: 0, len: 0 }
    while (this.flows.length < flow) this.flows.push(undefined)
    this.flows[flow] = f
    return f
  }

  private weight (flow: number): number {
    const w = this.weightOf(flow)
    if (!(w > 0 && w < Infinity)) throw new RangeError(`fair-queue: weight of flow ${flow} must be finite and > 0, got ${w}`)
    return w
  }

  private removeAt (i: number): void {
    const h = this.heap
    const f = h[i] as Flow<T>
    const last = h.pop() as Flow<T>
    f.pos = -1
    if (last === f) return
    h[i] = last
    last.pos = i
    this.down(i)
    this.up(last.pos)
  }

  private up (i: number): void {
    const h = this.heap
    const f = h[i] as Flow<T>
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = h[p] as Flow<T>
      if (!before(f, parent)) break
      h[i] = parent
      parent.pos = i
      i = p
    }
    h[i] = f
    f.pos = i
  }

  private down (i: number): void {
    const h = this.heap
    const n = h.length
    const f = h[i] as Flow<T>
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      const r = c + 1
      if (r < n && before(h[r] as Flow<T>, h[c] as Flow<T>)) c = r
      const child = h[c] as Flow<T>
      if (!before(child, f)) break
      h[i] = child
      child.pos = i
      i = c
    }
    h[i] = f
    f.pos = i
  }
}

function before<T> (a: Flow<T>, b: Flow<T>): boolean {
  return a.counter < b.counter || (a.counter === b.counter && a.stamp < b.stamp)
}

/** Doubles a full ring, unwrapping it so the head is at 0: the only allocation on push. */
function grow<T> (f: Flow<T>): void {
  const old = f.buf
  const mask = old.length - 1
  const buf = new Array<T | undefined>(old.length * 2).fill(undefined)
  for (let i = 0; i < f.len; i++) buf[i] = old[(f.head + i) & mask]
  f.buf = buf
  f.head = 0
}
