// The cost store's schema, as numbered migrations applied in order at start
// and recorded in `schema_migrations`. Statements are idempotent (IF NOT
// EXISTS) so a start that died half way through a migration simply runs it
// again. A new rollup added by a later migration only sees inserts made after
// it exists: backfill it with INSERT … SELECT from cost_events in the same
// migration.
//
// Exactly-once rests on three settings working together:
//   - every spool batch is inserted with insert_deduplication_token = batch id;
//   - every table written by that insert (cost_events and the materialized
//     views' targets) has non_replicated_deduplication_window, so a retried
//     or replayed batch is recognised and dropped, in the rollups too;
//   - the insert sets deduplicate_blocks_in_dependent_materialized_views = 1.
// The window counts inserts, not time: DEDUP_WINDOW batches of history.

/** Inserts (batches) remembered per table for deduplication. */
export const DEDUP_WINDOW = 100_000

const LC = 'LowCardinality(String)'

/** Column types of the spooled tables, by column name (what a spool header may name). */
export const TABLE_COLUMNS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  cost_events: {
    event_id: 'UUID',
    ts_ms: 'Int64',
    tenant_id: LC,
    route: LC,
    model_id: LC,
    model_version: LC,
    variant: LC,
    tier: LC,
    service_class: LC,
    model_class: LC,
    status: LC,
    http_status: 'UInt16',
    queue_wait_ms: 'Float64',
    inference_ms: 'Float64',
    batch_rows: 'UInt32',
    rows: 'UInt32',
    compute_seconds: 'Float64',
    cache_hit: 'Bool',
    fallback: 'Bool',
    degraded: 'Bool',
    cost_estimate_usd: 'Decimal(18, 12)',
    price_version: LC,
    cost_center: LC,
    region: LC,
    node_id: LC,
  },
  capacity_hours: {
    hour: "DateTime('UTC')",
    node_id: LC,
    pool: LC,
    capacity_seconds: 'Float64',
    node_cost_usd: 'Decimal(38, 12)',
    recorded_at_ms: 'UInt64',
  },
}

export const CAPACITY_COLUMNS = ['hour', 'node_id', 'pool', 'capacity_seconds', 'node_cost_usd', 'recorded_at_ms'] as const

/** A step that is not idempotent by itself: it runs only while `onlyIf` (a SELECT of one number) returns non-zero. */
export interface GuardedStatement {
  readonly sql: string
  readonly onlyIf: string
}

export type MigrationStatement = string | GuardedStatement

export interface Migration {
  readonly version: number
  readonly name: string
  /** `db`: the quoted database name, for SQL; `dbName`: the same name as a value (system tables). */
  statements (db: string, dbName: string): MigrationStatement[]
}

export function quoteIdent (name: string): string {
  return '`' + name.replace(/\\/g, '\\\\').replace(/`/g, '\\`') + '`'
}

const dedup = `non_replicated_deduplication_window = ${DEDUP_WINDOW}`
// t-digest states: a few hundred centroids per group, where the default
// reservoir keeps up to 8192 samples per group and hour; percentiles are
// approximate (within ~1% of rank) either way once a group has many rows.
const quantileLevels = '0.5, 0.9, 0.95, 0.99'

function columns (table: string): string {
  return Object.entries(TABLE_COLUMNS[table] ?? {}).map(([n, t]) => `${n} ${t}`).join(',\n  ')
}

/** A ClickHouse string literal. */
export function quoteLiteral (s: string): string {
  return "'" + s.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'"
}

// ReplacingMergeTree with event_id last in the key: a second copy of an
// event that slipped past block deduplication (e.g. re-emitted by a caller)
// still collapses at merge time / with FINAL. Rollups count what was inserted,
// which is why batch-level deduplication is the primary guarantee.
function costEventsTable (db: string, table: string, orderBy: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.${table} (
  ${columns('cost_events').replace('ts_ms Int64,', "ts_ms Int64,\n  ts DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(ts_ms),")}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY ${orderBy}
SETTINGS ${dedup}`
}

/**
 * cost_events' sorting key since migration 4. Time before event_id because
 * ClickHouse orders UUIDs by their second half — the random bits of a
 * UUIDv7 — so under the old key (tenant_id, toStartOfHour(ts), event_id)
 * every batch interleaved row by row with every other batch of the hour and
 * merges cost ~2.2 µs per row; ordered by time, batches stay in long runs
 * (~0.7 µs per row merged, and a third less disk, measured).
 */
export const COST_EVENTS_KEY = 'tenant_id, ts, event_id'

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'cost_events',
    statements: (db) => [costEventsTable(db, 'cost_events', '(tenant_id, toStartOfHour(ts), event_id)')],
  },
  {
    version: 2,
    name: 'cost_hourly',
    statements: (db) => [
      `CREATE TABLE IF NOT EXISTS ${db}.cost_hourly (
  hour DateTime('UTC'),
  tenant_id ${LC},
  model_id ${LC},
  model_version ${LC},
  route ${LC},
  tier ${LC},
  service_class ${LC},
  requests SimpleAggregateFunction(sum, UInt64),
  ok_requests SimpleAggregateFunction(sum, UInt64),
  rows SimpleAggregateFunction(sum, UInt64),
  compute_seconds SimpleAggregateFunction(sum, Float64),
  cost_usd SimpleAggregateFunction(sum, Decimal(38, 12)),
  queue_wait_ms_sum SimpleAggregateFunction(sum, Float64),
  inference_ms_sum SimpleAggregateFunction(sum, Float64),
  queue_wait_ms_q AggregateFunction(quantilesTDigest(${quantileLevels}), Float64),
  latency_ms_q AggregateFunction(quantilesTDigest(${quantileLevels}), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, tenant_id, model_id, model_version, route, tier, service_class)
SETTINGS ${dedup}`,
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.cost_hourly_mv TO ${db}.cost_hourly AS
SELECT
  toStartOfHour(ts) AS hour, tenant_id, model_id, model_version, route, tier, service_class,
  count() AS requests,
  countIf(status = 'ok') AS ok_requests,
  sum(toUInt64(rows)) AS rows,
  sum(compute_seconds) AS compute_seconds,
  sum(cost_estimate_usd) AS cost_usd,
  sum(queue_wait_ms) AS queue_wait_ms_sum,
  sum(inference_ms) AS inference_ms_sum,
  quantilesTDigestState(${quantileLevels})(queue_wait_ms) AS queue_wait_ms_q,
  quantilesTDigestState(${quantileLevels})(queue_wait_ms + inference_ms) AS latency_ms_q
FROM ${db}.cost_events
GROUP BY hour, tenant_id, model_id, model_version, route, tier, service_class`,
    ],
  },
  {
    version: 3,
    name: 'usage_hourly_and_capacity_hours',
    statements: (db) => [
      // Per node, pool (service class) and tenant: the input of the idle split.
      `CREATE TABLE IF NOT EXISTS ${db}.usage_hourly (
  hour DateTime('UTC'),
  node_id ${LC},
  pool ${LC},
  tenant_id ${LC},
  requests UInt64,
  rows UInt64,
  compute_seconds Float64,
  cost_usd Decimal(38, 12)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, node_id, pool, tenant_id)
SETTINGS ${dedup}`,
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.usage_hourly_mv TO ${db}.usage_hourly AS
SELECT
  toStartOfHour(ts) AS hour, node_id, service_class AS pool, tenant_id,
  count() AS requests,
  sum(toUInt64(rows)) AS rows,
  sum(compute_seconds) AS compute_seconds,
  sum(cost_estimate_usd) AS cost_usd
FROM ${db}.cost_events
GROUP BY hour, node_id, pool, tenant_id`,
      // What each pool of each node could have computed and what it cost, per
      // hour. The latest record for an (hour, node, pool) wins: read with FINAL.
      `CREATE TABLE IF NOT EXISTS ${db}.capacity_hours (
  ${columns('capacity_hours')}
) ENGINE = ReplacingMergeTree(recorded_at_ms)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, node_id, pool)
SETTINGS ${dedup}`,
    ],
  },
  {
    version: 4,
    name: 'cost_events_ordered_by_time',
    // A sorting key cannot be changed in place: build the table anew, copy,
    // and swap (EXCHANGE is atomic; the views follow the name, so they read
    // the new table). Safe to rerun from any point: until the swap, a rerun
    // empties the copy and starts over; after it, only the drop is left.
    // The copy takes ~1 s per million rows here; during it other nodes must
    // not insert into the same server (their rows would stay in the old
    // table). The new table starts an empty deduplication window: a batch
    // acknowledged before the upgrade and replayed after it is stored twice
    // in cost_events (same key, so merges and FINAL collapse it); the
    // rollups' own windows still recognise it.
    statements: (db, dbName) => {
      const oldKey = `SELECT count() FROM system.tables WHERE database = ${quoteLiteral(dbName)} AND name = 'cost_events' AND sorting_key != ${quoteLiteral(COST_EVENTS_KEY)}`
      const cols = ['event_id', 'ts_ms', 'ts', ...Object.keys(TABLE_COLUMNS.cost_events ?? {}).slice(2)].join(', ')
      return [
        costEventsTable(db, 'cost_events_rekey', `(${COST_EVENTS_KEY})`),
        { sql: `TRUNCATE TABLE ${db}.cost_events_rekey`, onlyIf: oldKey },
        { sql: `INSERT INTO ${db}.cost_events_rekey (${cols}) SELECT ${cols} FROM ${db}.cost_events`, onlyIf: oldKey },
        { sql: `EXCHANGE TABLES ${db}.cost_events AND ${db}.cost_events_rekey`, onlyIf: oldKey },
        `DROP TABLE IF EXISTS ${db}.cost_events_rekey`,
      ]
    },
  },
]

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0

export function migrationsTable (db: string): string {
  return `CREATE TABLE IF NOT EXISTS ${db}.schema_migrations (
  version UInt32,
  name String,
  applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY version`
}
