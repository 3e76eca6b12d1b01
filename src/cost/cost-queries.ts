// Ready queries over the rollups (docs/cost.md shows them with literal
// dates for `fairway sql`). All take the time range as {from:String} and
// {to:String} ('YYYY-MM-DD hh:mm:ss', UTC, `to` exclusive), bound
// server-side, and read the hourly rollups, never the raw events, so their
// cost does not grow with traffic. An alias that reuses a column name (sum(x)
// AS x) is referred to by the alias afterwards: ClickHouse resolves `x` in a
// later expression to the alias, so sum(x) there would nest aggregates.

const RANGE = "hour >= toDateTime({from:String}, 'UTC') AND hour < toDateTime({to:String}, 'UTC')"

export const READY_QUERIES = {
  /** Requests, rows, compute and cost per tenant. */
  costByTenant: `SELECT
  tenant_id,
  sum(requests) AS requests,
  sum(rows) AS rows,
  round(sum(compute_seconds), 6) AS compute_seconds,
  sum(cost_usd) AS cost_usd
FROM cost_hourly
WHERE ${RANGE}
GROUP BY tenant_id
ORDER BY cost_usd DESC, tenant_id`,

  /** What 1 000 inferences (rows) and 1 000 requests of each model version cost. */
  costPer1kByModel: `SELECT
  model_id,
  model_version,
  sum(requests) AS requests,
  sum(rows) AS inferences,
  sum(cost_usd) AS cost_usd,
  round(toFloat64(cost_usd) * 1000 / greatest(inferences, 1), 9) AS usd_per_1k_inferences,
  round(toFloat64(cost_usd) * 1000 / greatest(requests, 1), 9) AS usd_per_1k_requests
FROM cost_hourly
WHERE ${RANGE}
GROUP BY model_id, model_version
ORDER BY cost_usd DESC, model_id, model_version`,

  /** Queue wait (and in-server latency = queue wait + inference) percentiles per tier. */
  queueWaitByTier: `SELECT
  tier,
  sum(requests) AS requests,
  round(sum(queue_wait_ms_sum) / greatest(requests, 1), 3) AS avg_queue_wait_ms,
  round(quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(queue_wait_ms_q)[3], 3) AS p95_queue_wait_ms,
  round(quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_ms_q)[3], 3) AS p95_latency_ms
FROM cost_hourly
WHERE ${RANGE}
GROUP BY tier
ORDER BY tier`,

  /** The 10 busiest routes, with how many of their requests were refused or failed. */
  topRoutes: `SELECT
  route,
  sum(requests) AS requests,
  requests - sum(ok_requests) AS not_ok,
  sum(rows) AS rows,
  sum(cost_usd) AS cost_usd
FROM cost_hourly
WHERE ${RANGE}
GROUP BY route
ORDER BY requests DESC, route
LIMIT 10`,

  /**
   * Node cost split over tenants in proportion to the compute they used in
   * each (hour, node, pool): attributed = the used share of capacity, idle =
   * the unused rest, shared out by the same proportions. Per pool-hour,
   * attributed + idle = node_cost_usd exactly; pool-hours nobody used go to
   * '(unused)'. Usage without a capacity record is not in this report.
   */
  idleSplit: `SELECT * FROM (
  WITH
    cap AS (
      SELECT hour, node_id, pool, capacity_seconds, toFloat64(node_cost_usd) AS node_cost
      FROM capacity_hours FINAL
      WHERE ${RANGE}
    ),
    used AS (
      SELECT hour, node_id, pool, tenant_id, sum(compute_seconds) AS used_s
      FROM usage_hourly
      WHERE ${RANGE}
      GROUP BY hour, node_id, pool, tenant_id
      HAVING used_s > 0
    ),
    tot AS (
      SELECT hour, node_id, pool, sum(used_s) AS total_s
      FROM used
      GROUP BY hour, node_id, pool
    )
  SELECT
    tenant_id,
    sum(node_cost * used_s / greatest(capacity_seconds, total_s)) AS attributed_usd,
    sum(node_cost * used_s / total_s) - attributed_usd AS idle_share_usd,
    sum(node_cost * used_s / total_s) AS total_usd
  FROM used
  INNER JOIN tot USING (hour, node_id, pool)
  INNER JOIN cap USING (hour, node_id, pool)
  GROUP BY tenant_id
  UNION ALL
  SELECT '(unused)' AS tenant_id, 0 AS attributed_usd, sum(node_cost) AS idle_share_usd, sum(node_cost) AS total_usd
  FROM cap
  LEFT ANTI JOIN tot USING (hour, node_id, pool)
  HAVING count() > 0
)
ORDER BY total_usd DESC, tenant_id`,
} as const

export type ReadyQuery = keyof typeof READY_QUERIES

function utc (ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ')
}

/** Query params for one UTC day, 'YYYY-MM-DD'. */
export function dayRange (day: string): { from: string, to: string } {
  const start = Date.parse(`${day}T00:00:00Z`)
  if (!Number.isFinite(start)) throw new Error(`not a day: ${day} (use YYYY-MM-DD)`)
  return { from: utc(start), to: utc(start + 86_400_000) }
}

/** Query params for [fromMs, toMs). */
export function timeRange (fromMs: number, toMs: number): { from: string, to: string } {
  return { from: utc(fromMs), to: utc(toMs) }
}
