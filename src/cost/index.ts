// The cost pipeline's public surface, for the gateway and the config validator.

export { CostPipeline, defaultInsertMs, type CostPipelineOptions, type CostPipelineStats } from './cost-pipeline.js'
export type { CostBackendConfig, QueryFormat, QueryOptions } from './clickhouse-backend.js'
export { QUERY_FORMATS } from './clickhouse-backend.js'
export { COST_EVENT_COLUMNS, type CostEvent } from './cost-event.js'
export { uuidv7, isUuid, uuidv7Time } from './uuidv7.js'
export { checkPriceCoverage, costOf, poolCostPerHour, roundUsd, validatePriceTable, type PriceProblem, type PriceTable } from './pricing.js'
export type { CapacityRecord } from './capacity-record.js'
export { COST_ERRORS, CostError, type CostErrorCode } from './cost-error.js'
export { READY_QUERIES, dayRange, timeRange, type ReadyQuery } from './cost-queries.js'
export { MIGRATIONS, SCHEMA_VERSION, DEDUP_WINDOW } from './schema.js'
export type { FaultOptions } from './fault-injector.js'
