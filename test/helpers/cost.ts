// Shared by the cost pipeline tests: a plain served event, and what the
// store holds for a tenant (raw rows, unique ids, both rollups) — the four
// numbers every exactly-once assertion compares.

import type { CostPipeline } from '../../src/cost/cost-pipeline.js'
import type { CostEvent } from '../../src/cost/cost-event.js'
import { uuidv7 } from '../../src/cost/uuidv7.js'

/** A served 1-row event of `tenant`, `i` ms after midnight UTC of `day` (YYYY-MM-DD). */
export function costEvent (tenant: string, i: number, day: string): CostEvent {
  return {
    event_id: uuidv7(), ts_ms: Date.parse(`${day}T00:00:00Z`) + i, tenant_id: tenant, route: 'http:/v2/models/{m}/infer',
    model_id: 'm', model_version: '1', variant: 'default', tier: 'shared', service_class: 'shared', model_class: 'light',
    status: 'ok', http_status: 200, queue_wait_ms: 1, inference_ms: 0.5, batch_rows: 4, rows: 1, compute_seconds: 0.00001,
    cache_hit: false, fallback: false, degraded: false, cost_estimate_usd: 0.000003, price_version: 'p', cost_center: 'c', region: 'r', node_id: 'n',
  }
}

export interface StoredCounts { n: number, u: number, hourly: number, usage: number }

/** Rows, unique event ids, and request sums in cost_hourly and usage_hourly, for one tenant. */
export async function storedCounts (p: CostPipeline, tenant: string): Promise<StoredCounts> {
  return JSON.parse(await p.query(`SELECT
      (SELECT count() FROM cost_events WHERE tenant_id = '${tenant}') AS n,
      (SELECT uniqExact(event_id) FROM cost_events WHERE tenant_id = '${tenant}') AS u,
      (SELECT sum(requests) FROM cost_hourly WHERE tenant_id = '${tenant}') AS hourly,
      (SELECT sum(requests) FROM usage_hourly WHERE tenant_id = '${tenant}') AS usage`)) as StoredCounts
}
