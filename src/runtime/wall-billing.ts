// What an inline batch is billed: its wall time, capped against preemption.
//
// Workers bill their thread's CPU time, read in the worker. An inline batch
// runs on the gateway thread, where reading the thread's CPU clock twice per
// batch cost 6.4 µs per request (see inline-pool.ts), so its wall time is
// billed instead. Wall time includes any preemption by the kernel, which is
// not the tenant's work: in one run at 2,000 req/s, 1.6% of the batches took
// more than twice their CPU time + 20 µs, and their excess added 12% to the
// total. So a batch is billed
// at most CAP × the running average of batches with the same row count, plus
// SLACK_NS for timer jitter on tiny batches. Measured against the CPU clock
// over the same batches (two runs of ~31,000): capped wall 3.6% and 3.3% below CPU time,
// uncapped wall 4.4% and 3.3% above it. CPU time is not exact either: the
// softirq work of loopback packets that arrive during a batch is charged to
// the thread that was running.

/** A preempted batch is billed at most this multiple of its row count's average. */
const CAP = 3
const SLACK_NS = 20_000
/** Weight of each billed batch in the average: one capped batch raises it by at most EWMA × (CAP − 1) = 10%. */
const EWMA = 0.05

export class WallBilling {
  /** Running average of the billed ns, by row count; 0: no batch of that size yet. */
  private readonly avg: Float64Array

  constructor (maxRows: number) {
    this.avg = new Float64Array(maxRows + 1)
  }

  /**
   * The ns to bill a batch of `rows` rows that took `wallNs`. The first batch
   * of a row count is billed in full and seeds its average; a lasting
   * slowdown is followed within a few dozen batches (the average may grow by
   * 10% a batch).
   */
  bill (rows: number, wallNs: number): number {
    if (!(rows > 0 && rows < this.avg.length)) return wallNs
    const a = this.avg[rows] ?? 0
    const billed = a === 0 ? wallNs : Math.min(wallNs, CAP * a + SLACK_NS)
    this.avg[rows] = a === 0 ? billed : a + EWMA * (billed - a)
    return billed
  }
}
