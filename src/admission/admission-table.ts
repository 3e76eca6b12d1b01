// Lock-free admission state in one SharedArrayBuffer, updated only with
// Atomics, so any thread (gateway threads, workers, a metrics reader) can
// admit, release or read without a lock or a message.
//
// Layout (Int32 cells):
//   tenant rows, TENANT_STRIDE cells each (64 bytes: one cache line per tenant,
//   so two tenants' hot counters never share a line), then class rows of
//   CLASS_STRIDE cells. Row index = registry slot.
//
// A decision touches up to four cells of the caller's tenant and one of its
// class. The hot path (`admit`) allocates nothing: results are small integers
// and the retry hint is left in a plain field of this per-thread object.

export const TENANT_STRIDE = 16
export const CLASS_STRIDE = 4

// Tenant row.
const T_INFLIGHT = 0 // admitted and not yet released (queued + running)
const T_CAP = 1 // concurrency cap
const T_QUEUED = 2 // admitted and waiting for a worker
const T_QUEUE_CAP = 3 // queue-depth cap
const T_TAT = 4 // GCRA theoretical arrival time, µs since the table epoch
const T_INTERVAL = 5 // µs per request at the tenant's rate (0 = no rate limit)
const T_TOLERANCE = 6 // (burst - 1) × interval, µs
const T_ADMITTED = 7
const T_REJECT_BASE = 8 // + Reject code - 1: rejections per reason (8..12)

// Class row.
const C_QUEUED = 0
const C_SHED = 1 // shed threshold: queued jobs at which the class refuses more

/** Admission outcome; 0 is admitted, every other value names the reason. */
export const Reject = {
  None: 0,
  TenantRate: 1,
  TenantConcurrency: 2,
  TenantQueueFull: 3,
  ClassOverloaded: 4,
  DeadlineExceeded: 5,
} as const
export type Reject = typeof Reject[keyof typeof Reject]

/** Machine-readable reason strings, as sent in the body and `x-fairway-reject-reason`. */
export const REJECT_REASONS = ['', 'tenant_rate', 'tenant_concurrency', 'tenant_queue_full', 'class_overloaded', 'deadline_exceeded'] as const
export const REJECT_CODES = 5

export interface TenantPolicy {
  readonly concurrency: number
  readonly queueDepth: number
  /** Requests per second; 0 disables the rate limit. */
  readonly ratePerSecond: number
  readonly burst: number
}

export class AdmissionTable {
  readonly buffer: SharedArrayBuffer
  readonly tenants: number
  readonly classes: number
  /** After a TenantRate rejection: µs until one request would conform. */
  retryAfterUs = 0
  private readonly cells: Int32Array
  private readonly classBase: number
  // µs clock shared by every thread: wall-clock origin of this thread's
  // performance timer minus the table's epoch, stored in the buffer's tail.
  private readonly originUs: number

  constructor (tenants: number, classes: number, buffer?: SharedArrayBuffer) {
    this.tenants = tenants
    this.classes = classes
    const cellCount = tenants * TENANT_STRIDE + classes * CLASS_STRIDE + 2
    this.buffer = buffer ?? new SharedArrayBuffer(cellCount * 4)
    this.cells = new Int32Array(this.buffer)
    this.classBase = tenants * TENANT_STRIDE
    const epochCell = cellCount - 2
    if (buffer === undefined) {
      // Epoch in whole seconds of wall time, split across two cells.
      const epochS = Math.floor((performance.timeOrigin + performance.now()) / 1000)
      this.cells[epochCell] = Math.floor(epochS / 65536)
      this.cells[epochCell + 1] = epochS % 65536
    }
    const epochMs = ((this.cells[epochCell] ?? 0) * 65536 + (this.cells[epochCell + 1] ?? 0)) * 1000
    this.originUs = (performance.timeOrigin - epochMs) * 1000
  }

  /**
   * Microseconds since the table epoch, comparable across threads. Int32 µs
   * wraps after ~35 minutes; every comparison uses wrapping differences and
   * `refresh` keeps idle tenants' TAT from falling further behind than that.
   */
  nowUs (): number {
    return (this.originUs + performance.now() * 1000) | 0
  }

  setTenantPolicy (slot: number, p: TenantPolicy): void {
    const b = slot * TENANT_STRIDE
    const interval = p.ratePerSecond > 0 ? Math.max(1, Math.round(1e6 / p.ratePerSecond)) : 0
    Atomics.store(this.cells, b + T_CAP, p.concurrency)
    Atomics.store(this.cells, b + T_QUEUE_CAP, p.queueDepth)
    Atomics.store(this.cells, b + T_INTERVAL, interval)
    Atomics.store(this.cells, b + T_TOLERANCE, Math.min(2 ** 30, (Math.max(1, p.burst) - 1) * interval))
    Atomics.store(this.cells, b + T_TAT, this.nowUs())
  }

  setClassShed (classSlot: number, maxQueued: number): void {
    Atomics.store(this.cells, this.classBase + classSlot * CLASS_STRIDE + C_SHED, maxQueued)
  }

  /**
   * Admits one request of `tenant` into `classSlot`'s queue, or says why not.
   * Four compare-and-swap steps, each undone if a later one refuses:
   *   1. in-flight < cap        (concurrency)
   *   2. tenant queued < depth  (tenant queue)
   *   3. class queued < shed    (class overload)
   *   4. GCRA conformance       (rate; last, so a token is only spent on admission)
   * Each CAS loop is the whole handshake: read, and install the new value only
   * if nobody changed the cell in between; a racing thread makes the CAS fail
   * and we re-read. No cap is ever overshot, across any number of threads.
   */
  admit (tenant: number, classSlot: number, nowUs: number): Reject {
    const c = this.cells
    const b = tenant * TENANT_STRIDE
    if (!incrementBelow(c, b + T_INFLIGHT, Atomics.load(c, b + T_CAP))) return this.reject(b, Reject.TenantConcurrency)
    if (!incrementBelow(c, b + T_QUEUED, Atomics.load(c, b + T_QUEUE_CAP))) {
      Atomics.sub(c, b + T_INFLIGHT, 1)
      return this.reject(b, Reject.TenantQueueFull)
    }
    const cq = this.classBase + classSlot * CLASS_STRIDE
    if (!incrementBelow(c, cq + C_QUEUED, Atomics.load(c, cq + C_SHED))) {
      Atomics.sub(c, b + T_QUEUED, 1)
      Atomics.sub(c, b + T_INFLIGHT, 1)
      return this.reject(b, Reject.ClassOverloaded)
    }
    const interval = Atomics.load(c, b + T_INTERVAL)
    if (interval > 0) {
      const tolerance = Atomics.load(c, b + T_TOLERANCE)
      for (;;) {
        const tat = Atomics.load(c, b + T_TAT)
        // (tat - now) as a wrapping difference: > 0 when tat is in the future.
        const ahead = (tat - nowUs) | 0
        const start = ahead > 0 ? tat : nowUs
        const next = (start + interval) | 0
        const wait = ((next - nowUs) | 0) - interval - tolerance
        if (wait > 0) {
          Atomics.sub(c, cq + C_QUEUED, 1)
          Atomics.sub(c, b + T_QUEUED, 1)
          Atomics.sub(c, b + T_INFLIGHT, 1)
          this.retryAfterUs = wait
          return this.reject(b, Reject.TenantRate)
        }
        if (Atomics.compareExchange(c, b + T_TAT, tat, next) === tat) break
      }
    }
    Atomics.add(c, b + T_ADMITTED, 1)
    return Reject.None
  }

  /** The job left the queue (dispatched to a worker or dropped). Exactly once per admitted job. */
  dequeued (tenant: number, classSlot: number): void {
    Atomics.sub(this.cells, tenant * TENANT_STRIDE + T_QUEUED, 1)
    Atomics.sub(this.cells, this.classBase + classSlot * CLASS_STRIDE + C_QUEUED, 1)
  }

  /** The request is finished, whatever the outcome. Exactly once per admitted request. */
  release (tenant: number): void {
    Atomics.sub(this.cells, tenant * TENANT_STRIDE + T_INFLIGHT, 1)
  }

  /** Counts a rejection decided outside `admit` (deadline expiry in the queue). */
  countReject (tenant: number, reason: Reject): void {
    Atomics.add(this.cells, tenant * TENANT_STRIDE + T_REJECT_BASE + reason - 1, 1)
  }

  /**
   * Keeps idle tenants' TAT within a minute of now so the Int32 µs clock's
   * wrap (~35 min) can never make an old TAT look like a future one. Called
   * every few seconds off the hot path.
   */
  refresh (nowUs: number): void {
    const floor = (nowUs - 60_000_000) | 0
    for (let s = 0; s < this.tenants; s++) {
      const i = s * TENANT_STRIDE + T_TAT
      const tat = Atomics.load(this.cells, i)
      if (((tat - floor) | 0) < 0) Atomics.compareExchange(this.cells, i, tat, floor)
    }
  }

  inflight (tenant: number): number { return Atomics.load(this.cells, tenant * TENANT_STRIDE + T_INFLIGHT) }
  queued (tenant: number): number { return Atomics.load(this.cells, tenant * TENANT_STRIDE + T_QUEUED) }
  admitted (tenant: number): number { return Atomics.load(this.cells, tenant * TENANT_STRIDE + T_ADMITTED) }
  rejected (tenant: number, reason: Reject): number { return Atomics.load(this.cells, tenant * TENANT_STRIDE + T_REJECT_BASE + reason - 1) }
  classQueued (classSlot: number): number { return Atomics.load(this.cells, this.classBase + classSlot * CLASS_STRIDE + C_QUEUED) }

  /** Sum of in-flight requests over all tenants (shutdown waits for zero). */
  totalInflight (): number {
    let n = 0
    for (let s = 0; s < this.tenants; s++) n += this.inflight(s)
    return n
  }

  private reject (b: number, reason: Reject): Reject {
    Atomics.add(this.cells, b + T_REJECT_BASE + reason - 1, 1)
    return reason
  }
}

/** CAS loop: cell += 1 if cell < limit. True when incremented. */
function incrementBelow (c: Int32Array, i: number, limit: number): boolean {
  for (;;) {
    const cur = Atomics.load(c, i)
    if (cur >= limit) return false
    if (Atomics.compareExchange(c, i, cur, cur + 1) === cur) return true
  }
}
