// The platform config: tenant registry, service classes and model catalog in
// one JSON file. These are the validated, normalised shapes the rest of the
// server reads; `validate-config.ts` is the only producer.

import type { CostBackendConfig, PriceTable } from '../cost/index.js'

export const TIERS = ['shared', 'premium_shared', 'semi_isolated', 'dedicated'] as const
export type Tier = typeof TIERS[number]

export const DATATYPES = ['FP32'] as const
export type Datatype = typeof DATATYPES[number]

export interface ServerConfig {
  readonly host: string
  readonly port: number
  /** Largest accepted request body; bigger bodies get 413 without being buffered. */
  readonly maxBodyBytes: number
  /** How long shutdown waits for in-flight requests before closing anyway. */
  readonly drainTimeoutMs: number
  /**
   * CPUs for the gateway thread (and the threads it starts before pinning
   * them, e.g. the cost sink). Empty: unpinned. Keeping it off the CPUs of a
   * saturated heavy class keeps admission and light traffic responsive.
   */
  readonly cpus: readonly number[]
  /**
   * Nice value for every thread of the process but the gateway thread and
   * the inference workers: cost sink, embedded ClickHouse, libuv's pool,
   * V8's helpers (src/runtime/background-nice.ts). 0: left alone.
   */
  readonly backgroundNice: number
}

export type DeviceConfig =
  | { readonly kind: 'cpu' }
  | { readonly kind: 'cuda'; readonly deviceId: number }

export interface ServiceClassConfig {
  readonly id: string
  /** Share of worker capacity relative to other classes (scheduling uses it). */
  readonly weight: number
  /** CPU ids the class's worker threads are pinned to. */
  readonly cpus: readonly number[]
  /**
   * Nice value of the class's worker threads (0..19, default 0). Bulk classes
   * run higher so that threads sharing their CPUs (gateway, light classes)
   * are scheduled first; they still get every cycle nobody else wants.
   */
  readonly nice: number
  readonly workers: number
  readonly device: DeviceConfig
  /** A dedicated class serves its tenants' every model, overriding model routing. */
  readonly dedicated: boolean
  /** Shed threshold: queued requests at which the class answers 503 instead of queueing more. */
  readonly maxQueued: number
  /**
   * Classes this class's idle workers may serve (work-conserving lending, as
   * Kubernetes APF lends seats). Its own work takes the worker back at the
   * next batch boundary. A dedicated class lends only where listed here.
   */
  readonly lendTo: readonly string[]
  /**
   * Where batches run: 'workers' (default), the class's own pinned worker
   * threads; 'inline', the gateway thread itself (light models only: no
   * thread hand-off per batch, but the event loop waits while a batch runs).
   */
  readonly runtime: 'workers' | 'inline'
}

export interface TensorSpec {
  readonly name: string
  readonly datatype: Datatype
  /** Shape with -1 for the batch dimension, e.g. [-1, 64]. */
  readonly shape: readonly number[]
}

export interface ModelVersionConfig {
  readonly version: string
  /** Absolute path of the ONNX artifact (resolved against the model repository). */
  readonly artifact: string
}

export interface ModelConfig {
  readonly id: string
  /** Model size class used for cost and monitoring: light, mid or heavy. */
  readonly modelClass: string
  /** Service class every request for this model runs in (unless the tenant is dedicated). */
  readonly serviceClass: string | null
  readonly versions: ReadonlyMap<string, ModelVersionConfig>
  readonly defaultVersion: string
  readonly input: TensorSpec
  readonly output: TensorSpec
  /** Rows per worker task; requests are batched up to this. */
  readonly maxBatchSize: number
  /** Rows one request may carry. */
  readonly maxRowsPerRequest: number
  /**
   * Batching window, µs: how long a free worker may wait for a batch of this
   * model version to fill before it runs what is queued. 0 = never wait (a
   * free worker takes whatever is queued; batches grow only while all workers
   * are busy).
   */
  readonly maxQueueDelayUs: number
}

export interface TenantLimits {
  readonly concurrency: number
  /** Requests per second (GCRA); 0 means no rate limit. */
  readonly ratePerSecond: number
  readonly burst: number
  readonly queueDepth: number
  readonly timeoutMs: number
  /**
   * Longest a request of this tenant may be held for batching, µs (caps every
   * model's window for it); null = no cap beyond the model's window.
   */
  readonly maxBatchWaitUs: number | null
}

/** Default fair-queuing weight of each tier (a tenant may override it). */
export const TIER_WEIGHTS: Readonly<Record<Tier, number>> = { shared: 1, premium_shared: 4, semi_isolated: 2, dedicated: 1 }

export interface TenantConfig {
  readonly id: string
  readonly tier: Tier
  /** Fair-queuing weight within its service class (default from the tier). */
  readonly weight: number
  /** SHA-256 hex digests of the tenant's API keys; plaintext keys are never stored. */
  readonly apiKeyHashes: readonly string[]
  /** Allowed models and the version the registry selects for each. */
  readonly models: ReadonlyMap<string, string>
  readonly queueClass: string
  readonly limits: TenantLimits
  readonly region: string
  readonly costCenter: string
  readonly rolloutEligible: boolean
  /** Tenant-specific configuration (thresholds, label maps, routing rules), opaque to the server core. */
  readonly settings: Readonly<Record<string, unknown>>
}

export interface AdminConfig {
  /** SHA-256 hex digests of operator tokens (for /metrics and admin endpoints). */
  readonly tokenHashes: readonly string[]
}

export interface CostConfig {
  /** Off: no cost events (tests that run several servers in one process). */
  readonly enabled: boolean
  readonly backend: CostBackendConfig
  /** Durable spool of batches not yet acknowledged by ClickHouse. */
  readonly spoolDir: string
  readonly batchRows: number
  readonly flushMs: number
  /** Spooled batches are inserted together after waiting this long. */
  readonly insertMs: number
}

export interface PlatformConfig {
  /** File the config was read from (null when built in memory). */
  readonly source: string | null
  readonly server: ServerConfig
  readonly admin: AdminConfig
  readonly serviceClasses: ReadonlyMap<string, ServiceClassConfig>
  readonly models: ReadonlyMap<string, ModelConfig>
  readonly tenants: ReadonlyMap<string, TenantConfig>
  /** The versioned price table every cost event is priced with. */
  readonly pricing: PriceTable
  readonly cost: CostConfig
}
