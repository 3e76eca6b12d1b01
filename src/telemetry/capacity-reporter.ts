// Feeds `capacity_hours`: for every pool (service class), how many
// worker-seconds it could have served in each hour it was up and what that
// hour of its CPUs cost. With the usage rollups this gives the idle split:
// what tenants used plus the idle remainder equals what the node cost.
// A record is rewritten (later wins) every minute for the current hour, once
// more for the hour that just ended, and at shutdown.

import { availableParallelism } from 'node:os'
import type { ServiceClassConfig } from '../control-plane/config-types.js'
import { poolCostPerHour, type CapacityRecord, type CostPipeline, type PriceTable } from '../cost/index.js'

const HOUR_MS = 3_600_000
const TICK_MS = 60_000

export class CapacityReporter {
  private readonly startedAt = Date.now()
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly pipeline: CostPipeline, private readonly prices: PriceTable, private readonly pools: readonly ServiceClassConfig[]) {}

  start (): void {
    this.timer = setInterval(() => { this.report(Date.now()).catch(() => { /* the pipeline logs its own failures */ }) }, TICK_MS)
    this.timer.unref()
  }

  /** Records the hour that contains `now` up to `now`, and the previous hour in full if the server was up then. */
  async report (now: number): Promise<void> {
    const hour = Math.floor(now / HOUR_MS) * HOUR_MS
    const records: CapacityRecord[] = []
    if (this.startedAt < hour) records.push(...this.hour(hour - HOUR_MS, hour))
    records.push(...this.hour(hour, now))
    await this.pipeline.recordCapacity(records)
  }

  async stop (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.report(Date.now())
  }

  /** Capacity of every pool between max(hourStart, startedAt) and `until`. */
  private hour (hourStart: number, until: number): CapacityRecord[] {
    const from = Math.max(hourStart, this.startedAt)
    const seconds = Math.max(0, (until - from) / 1000)
    const nodeCpus = availableParallelism()
    return this.pools.map((p) => ({
      hour_ms: hourStart,
      pool: p.id,
      capacity_seconds: p.workers * seconds,
      node_cost_usd: poolCostPerHour(this.prices, p.cpus.length, nodeCpus) * (seconds / 3600),
    }))
  }
}
