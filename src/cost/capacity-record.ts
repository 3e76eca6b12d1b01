// Per-hour capacity of a worker pool, fed by the gateway (one record per
// pool per hour): how many worker-seconds the pool could have computed and
// what that hour of the pool cost. With usage_hourly it lets the idle split
// give every hour of every pool's cost to someone: attributed + idle = cost.

import { CostError } from './cost-error.js'

export interface CapacityRecord {
  /** Any time inside the hour (ms); truncated to the hour, UTC. */
  hour_ms: number
  /** Pool = service class id. */
  pool: string
  /** Worker-seconds the pool could serve in the hour (workers × 3600 for a full hour). */
  capacity_seconds: number
  /** What the pool's share of the node cost for the hour (see poolCostPerHour). */
  node_cost_usd: number
  /** Defaults to the pipeline's nodeId. */
  node_id?: string
}

const HOUR_MS = 3_600_000

const TSV_SPECIAL = /[\t\n\r\\\0]/
const TSV_SPECIAL_G = /[\t\n\r\\\0]/g
const TSV_ESCAPES: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r', '\\': '\\\\', '\0': '\\0' }

/** A string as a TabSeparated field (capacity batches are spooled as TSV). */
export function tsvEscape (s: string): string {
  return TSV_SPECIAL.test(s) ? s.replace(TSV_SPECIAL_G, (c) => TSV_ESCAPES[c] ?? c) : s
}

let lastRecordedAt = 0

function hourText (ms: number): string {
  return new Date(Math.floor(ms / HOUR_MS) * HOUR_MS).toISOString().slice(0, 19).replace('T', ' ')
}

/** TSV rows in CAPACITY_COLUMNS order; throws FW_ERR_COST_RECORD_INVALID on the first bad record. */
export function encodeCapacity (records: readonly CapacityRecord[], nodeId: string): string {
  // recorded_at_ms orders versions of one (hour, node, pool): later wins.
  const at = lastRecordedAt = Math.max(Date.now(), lastRecordedAt + 1)
  let out = ''
  records.forEach((r, i) => {
    const bad = (why: string): never => { throw new CostError('FW_ERR_COST_RECORD_INVALID', i, why) }
    if (r === null || typeof r !== 'object') bad('must be an object')
    if (!Number.isFinite(r.hour_ms) || r.hour_ms < 0) bad('hour_ms must be a time in ms')
    if (typeof r.pool !== 'string' || r.pool === '') bad('pool must be a non-empty string')
    if (!Number.isFinite(r.capacity_seconds) || r.capacity_seconds < 0) bad('capacity_seconds must be a number >= 0')
    if (!Number.isFinite(r.node_cost_usd) || r.node_cost_usd < 0 || r.node_cost_usd >= 1e12) bad('node_cost_usd must be a number >= 0')
    const node = typeof r.node_id === 'string' && r.node_id !== '' ? r.node_id : nodeId
    out += `${hourText(r.hour_ms)}\t${tsvEscape(node)}\t${tsvEscape(r.pool)}\t${r.capacity_seconds}\t${r.node_cost_usd.toFixed(12)}\t${at}\n`
  })
  return out
}
