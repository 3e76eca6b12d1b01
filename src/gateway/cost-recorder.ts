// Turns request outcomes into cost events: one per request the gateway
// answered after it knew the tenant (served, refused, failed, bad body).
// Priced here, at emit time, with the table version recorded in the event, so
// finance can always tell which prices produced a number.

import { hostname } from 'node:os'
import type { Route } from '../control-plane/registry.js'
import { costOf, uuidv7, type CostEvent, type CostPipeline, type PriceTable } from '../cost/index.js'
import type { BatchInfo } from '../scheduling/class-scheduler.js'

export class CostRecorder {
  readonly pipeline: CostPipeline
  private readonly prices: PriceTable
  private readonly nodeId = hostname()

  constructor (pipeline: CostPipeline, prices: PriceTable) {
    this.pipeline = pipeline
    this.prices = prices
  }

  /**
   * `surface` is the API route template ('http:/v2/models/{m}/infer',
   * 'ws:/v2/ws'); `info` is null when the request never ran (refused,
   * expired, bad body), which bills the per-request fee and no compute.
   */
  record (route: Route, surface: string, arrived: number, rows: number, status: string, httpStatus: number, info: BatchInfo | null): void {
    const t = route.tenant.config
    const share = info === null || info.batchRows === 0 ? 0 : rows / info.batchRows
    const computeSeconds = info === null ? 0 : (info.cpuNs / 1e9) * share
    const e: CostEvent = {
      event_id: uuidv7(),
      ts_ms: Date.now(),
      tenant_id: t.id,
      route: surface,
      model_id: route.model.id,
      model_version: route.version.version,
      variant: t.tier === 'semi_isolated' || t.tier === 'dedicated' ? `${t.id}:${route.version.version}` : 'shared',
      tier: t.tier,
      service_class: info?.ranOn ?? route.serviceClass.id,
      model_class: route.model.modelClass,
      status,
      http_status: httpStatus,
      queue_wait_ms: info === null ? 0 : Math.max(0, info.dispatchedAt - arrived),
      inference_ms: info === null ? 0 : info.inferenceNs / 1e6,
      batch_rows: info?.batchRows ?? 0,
      rows,
      compute_seconds: computeSeconds,
      cache_hit: false,
      fallback: false,
      degraded: false,
      cost_estimate_usd: costOf(this.prices, route.model.modelClass, t.tier, computeSeconds),
      price_version: this.prices.version,
      cost_center: t.costCenter,
      region: t.region,
      node_id: this.nodeId,
    }
    this.pipeline.emit(e)
  }
}
