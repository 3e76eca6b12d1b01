// Per-tenant admission counters in one SharedArrayBuffer, updated only with
// Atomics, so any thread (gateway threads, workers, a metrics reader) can admit,
// release or read without a lock or a message.
//
// Layout: one Int32 row of STRIDE cells per tenant slot (slot = registry order).
//   INFLIGHT   requests admitted and not yet released
//   CAP        concurrency cap (copied from the registry; updatable live)
//   ADMITTED   total admitted (wraps at 2^31; for rates, not totals)
//   REJECTED   total rejected by the concurrency cap
// A row is 16 bytes; four rows share a 64-byte cache line. Contention across
// tenants is therefore possible but cheap; per-tenant padding can come when a
// benchmark shows it matters.

export const STRIDE = 4
const INFLIGHT = 0
const CAP = 1
const ADMITTED = 2
const REJECTED = 3

export class TenantCounters {
  readonly buffer: SharedArrayBuffer
  private readonly cells: Int32Array

  constructor (slotsOrBuffer: number | SharedArrayBuffer) {
    this.buffer = typeof slotsOrBuffer === 'number'
      ? new SharedArrayBuffer(slotsOrBuffer * STRIDE * Int32Array.BYTES_PER_ELEMENT)
      : slotsOrBuffer
    this.cells = new Int32Array(this.buffer)
  }

  setCap (slot: number, cap: number): void {
    Atomics.store(this.cells, slot * STRIDE + CAP, cap)
  }

  /**
   * Takes one in-flight slot if the tenant is under its cap. Hot path: no
   * allocation. The compare-and-swap loop is the whole handshake: we read the
   * count, and only install count+1 if nobody changed it in between; a racing
   * thread makes our CAS fail and we re-read, so the cap is never overshot even
   * under concurrent bursts from several threads.
   */
  tryAcquire (slot: number): boolean {
    const base = slot * STRIDE
    const cap = Atomics.load(this.cells, base + CAP)
    for (;;) {
      const cur = Atomics.load(this.cells, base + INFLIGHT)
      if (cur >= cap) {
        Atomics.add(this.cells, base + REJECTED, 1)
        return false
      }
      if (Atomics.compareExchange(this.cells, base + INFLIGHT, cur, cur + 1) === cur) {
        Atomics.add(this.cells, base + ADMITTED, 1)
        return true
      }
    }
  }

  /** Gives back a slot taken by tryAcquire. Callers guarantee exactly once (see AdmissionTicket). */
  release (slot: number): void {
    Atomics.sub(this.cells, slot * STRIDE + INFLIGHT, 1)
  }

  inflight (slot: number): number {
    return Atomics.load(this.cells, slot * STRIDE + INFLIGHT)
  }

  rejected (slot: number): number {
    return Atomics.load(this.cells, slot * STRIDE + REJECTED)
  }

  admitted (slot: number): number {
    return Atomics.load(this.cells, slot * STRIDE + ADMITTED)
  }

  /** Sum of in-flight requests over all tenants (shutdown waits for zero). */
  totalInflight (): number {
    let n = 0
    for (let i = INFLIGHT; i < this.cells.length; i += STRIDE) n += Atomics.load(this.cells, i)
    return n
  }
}
