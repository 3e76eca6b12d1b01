// One cost event per request the gateway answered (served or refused): who
// asked for what, how long it waited and ran, what share of its batch's
// worker time it used and what that cost at the price table in force.

export { uuidv7, isUuid } from './uuidv7.js'

export interface CostEvent {
  /** UUIDv7 (uuidv7()); also the idempotency key of the event. */
  event_id: string
  ts_ms: number
  tenant_id: string
  /** Route template, e.g. 'http:/v2/models/{m}/infer'. */
  route: string
  model_id: string
  model_version: string
  variant: string
  tier: string
  service_class: string
  model_class: string
  /** 'ok' or the refusal/failure reason ('tenant_concurrency', 'bad_request', 'deadline_exceeded', 'error', ...). */
  status: string
  http_status: number
  queue_wait_ms: number
  inference_ms: number
  /** Rows of the worker batch this request ran in (0 when it never ran). */
  batch_rows: number
  /** This request's rows. */
  rows: number
  /** This request's share (rows / batch_rows) of its batch's worker compute time. */
  compute_seconds: number
  cache_hit: boolean
  fallback: boolean
  degraded: boolean
  cost_estimate_usd: number
  price_version: string
  cost_center: string
  region: string
  node_id: string
}

/** String fields, in the order the ring stores their dictionary ids. */
export const STRING_FIELDS = [
  'tenant_id', 'route', 'model_id', 'model_version', 'variant', 'tier', 'service_class',
  'model_class', 'status', 'price_version', 'cost_center', 'region', 'node_id',
] as const satisfies ReadonlyArray<keyof CostEvent>

/** Column order of a spooled cost_events batch (the Native block's columns). */
export const COST_EVENT_COLUMNS = [
  'event_id', 'ts_ms', 'tenant_id', 'route', 'model_id', 'model_version', 'variant', 'tier',
  'service_class', 'model_class', 'status', 'http_status', 'queue_wait_ms', 'inference_ms',
  'batch_rows', 'rows', 'compute_seconds', 'cache_hit', 'fallback', 'degraded',
  'cost_estimate_usd', 'price_version', 'cost_center', 'region', 'node_id',
] as const satisfies ReadonlyArray<keyof CostEvent>
