// The tenant registry: the one place the gateway, scheduler and (later)
// rollout and billing ask "who is calling, and what do they get". Every
// tenant × model decision is precomputed into a Route at load, so resolving a
// request is two Map lookups and no allocation.

import { fwError } from '../errors.js'
import type { ModelConfig, ModelVersionConfig, PlatformConfig, ServiceClassConfig, TenantConfig } from './config-types.js'
import { hashApiKey } from './api-keys.js'

export interface TenantEntry {
  readonly config: TenantConfig
  /** Slot of this tenant in the admission SharedArrayBuffer. */
  readonly slot: number
  /** Routes by model id: the tenant's allow-list with the selected version. */
  readonly routes: ReadonlyMap<string, Route>
}

export interface Route {
  readonly tenant: TenantEntry
  readonly model: ModelConfig
  readonly version: ModelVersionConfig
  readonly serviceClass: ServiceClassConfig
  /** Row of the service class in the admission table. */
  readonly classSlot: number
  /** Key of the executable unit (model version in a class) that batches this route. */
  readonly unitKey: string
  /**
   * Longest a request on this route may be held for batching, ms: the model's
   * window capped by the tenant's maxBatchWaitUs. Precomputed so the
   * scheduler's per-request check is one field read.
   */
  readonly maxBatchWaitMs: number
}

/** One model version loaded in one service class's workers. */
export interface ExecutableUnit {
  readonly key: string
  readonly model: ModelConfig
  readonly version: ModelVersionConfig
  readonly serviceClass: ServiceClassConfig
}

// Bounded so a stream of distinct valid keys cannot grow memory without limit.
const KEY_CACHE_MAX = 4096

export class TenantRegistry {
  readonly config: PlatformConfig
  readonly tenants: readonly TenantEntry[]
  readonly units: ReadonlyMap<string, ExecutableUnit>
  /** Service class id -> row in the admission table (config order). */
  readonly classSlots: ReadonlyMap<string, number>
  private readonly byKeyHash = new Map<string, TenantEntry>()
  // Presented key -> tenant, so the SHA-256 runs once per key, not per request.
  private readonly keyCache = new Map<string, TenantEntry>()

  constructor (config: PlatformConfig) {
    this.config = config
    const units = new Map<string, ExecutableUnit>()
    const tenants: TenantEntry[] = []
    const classSlots = new Map([...config.serviceClasses.keys()].map((id, i) => [id, i]))
    this.classSlots = classSlots
    for (const t of config.tenants.values()) {
      const routes = new Map<string, Route>()
      const entry: TenantEntry = { config: t, slot: tenants.length, routes }
      const tenantClass = config.serviceClasses.get(t.queueClass)
      if (tenantClass === undefined) throw new Error(`tenant ${t.id}: unknown class ${t.queueClass}`)
      for (const [modelId, ver] of t.models) {
        const model = config.models.get(modelId)
        const version = model?.versions.get(ver)
        if (model === undefined || version === undefined) throw new Error(`tenant ${t.id}: unknown model ${modelId}@${ver}`)
        // A dedicated tenant keeps all its work in its own pool; otherwise a
        // model pinned to a class (the heavy class) runs there for everyone.
        const sc = tenantClass.dedicated || model.serviceClass === null
          ? tenantClass
          : config.serviceClasses.get(model.serviceClass) ?? tenantClass
        const unitKey = `${model.id}@${version.version}#${sc.id}`
        if (!units.has(unitKey)) units.set(unitKey, { key: unitKey, model, version, serviceClass: sc })
        const maxBatchWaitMs = Math.min(model.maxQueueDelayUs, t.limits.maxBatchWaitUs ?? Infinity) / 1000
        routes.set(modelId, { tenant: entry, model, version, serviceClass: sc, classSlot: classSlots.get(sc.id) ?? 0, unitKey, maxBatchWaitMs })
      }
      tenants.push(entry)
      for (const h of t.apiKeyHashes) this.byKeyHash.set(h, entry)
    }
    this.tenants = tenants
    this.units = units
  }

  /** True when the bearer token is an operator (admin) token. Admin tokens never authenticate as a tenant. */
  isAdmin (authorization: string): boolean {
    if (authorization.slice(0, 7).toLowerCase() !== 'bearer ') return false
    return this.config.admin.tokenHashes.includes(hashApiKey(authorization.slice(7).trim()))
  }

  /** Resolves `Authorization: Bearer <key>`; throws FW_ERR_AUTH_*. */
  authenticate (authorization: string): TenantEntry {
    if (authorization.length < 8 || authorization.slice(0, 7).toLowerCase() !== 'bearer ') throw fwError('FW_ERR_AUTH_MISSING')
    const key = authorization.slice(7).trim()
    const cached = this.keyCache.get(key)
    if (cached !== undefined) return cached
    const entry = this.byKeyHash.get(hashApiKey(key))
    if (entry === undefined) throw fwError('FW_ERR_AUTH_INVALID')
    if (this.keyCache.size >= KEY_CACHE_MAX) this.keyCache.clear()
    this.keyCache.set(key, entry)
    return entry
  }

  /**
   * The route for a tenant naming a model (and maybe a version). A tenant gets
   * the version the registry selected for it; naming another existing version
   * is refused rather than silently served.
   */
  resolve (tenant: TenantEntry, modelId: string, version: string | null): Route {
    const route = tenant.routes.get(modelId)
    if (route === undefined) {
      throw this.config.models.has(modelId) ? fwError('FW_ERR_MODEL_FORBIDDEN', modelId) : fwError('FW_ERR_MODEL_NOT_FOUND', modelId)
    }
    if (version !== null && version !== route.version.version) {
      if (!route.model.versions.has(version)) throw fwError('FW_ERR_MODEL_VERSION_NOT_FOUND', `${modelId}/${version}`)
      throw fwError('FW_ERR_MODEL_VERSION_FORBIDDEN', `version ${version} of ${modelId} is not enabled for this tenant (it is served version ${route.version.version})`)
    }
    return route
  }

  tenantById (id: string): TenantEntry | undefined {
    return this.tenants.find((t) => t.config.id === id)
  }

  unitsOfClass (classId: string): ExecutableUnit[] {
    return [...this.units.values()].filter((u) => u.serviceClass.id === classId)
  }
}
