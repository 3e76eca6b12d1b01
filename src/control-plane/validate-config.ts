// Validates the raw JSON of a platform config and normalises it. Every problem
// is reported with the JSON path of the bad field and why, all at once, so an
// operator fixes a file in one pass. The server refuses to start on any problem.

import { isAbsolute, resolve } from 'node:path'
import { checkPriceCoverage, defaultInsertMs, validatePriceTable, type CostBackendConfig } from '../cost/index.js'
import {
  DATATYPES, TIER_WEIGHTS, TIERS,
  type CostConfig, type Datatype, type DeviceConfig, type ModelConfig, type ModelVersionConfig, type PlatformConfig,
  type ServiceClassConfig, type TenantConfig, type TensorSpec, type Tier,
} from './config-types.js'

export interface ConfigProblem {
  readonly path: string
  readonly message: string
}

type Json = Record<string, unknown>

const SHA256_HEX = /^[0-9a-f]{64}$/
const ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/
// Batching windows and caps, µs: 100 ms is already far beyond what batching
// can win for a model small enough to want it; larger is most likely a unit slip.
const MAX_BATCH_WAIT_US = 100_000

class Checker {
  readonly problems: ConfigProblem[] = []

  fail (path: string, message: string): void {
    this.problems.push({ path, message })
  }

  object (v: unknown, path: string): Json | null {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Json
    this.fail(path, 'must be an object')
    return null
  }

  unknownKeys (o: Json, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) this.fail(`${path}.${k}`, `unknown field (allowed: ${allowed.join(', ')})`)
    }
  }

  string (o: Json, key: string, path: string, dflt?: string): string {
    const v = o[key]
    if (v === undefined && dflt !== undefined) return dflt
    if (typeof v === 'string' && v.length > 0) return v
    this.fail(`${path}.${key}`, v === undefined ? 'is required' : 'must be a non-empty string')
    return dflt ?? ''
  }

  id (o: Json, key: string, path: string): string {
    const s = this.string(o, key, path)
    if (s !== '' && !ID.test(s)) this.fail(`${path}.${key}`, 'must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}')
    return s
  }

  number (o: Json, key: string, path: string, opts: { min: number; max?: number; int?: boolean; dflt?: number }): number {
    const v = o[key]
    if (v === undefined && opts.dflt !== undefined) return opts.dflt
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      this.fail(`${path}.${key}`, v === undefined ? 'is required' : 'must be a number')
      return opts.dflt ?? opts.min
    }
    if (opts.int === true && !Number.isInteger(v)) this.fail(`${path}.${key}`, 'must be an integer')
    else if (v < opts.min) this.fail(`${path}.${key}`, `must be >= ${opts.min}`)
    else if (opts.max !== undefined && v > opts.max) this.fail(`${path}.${key}`, `must be <= ${opts.max}`)
    return v
  }

  boolean (o: Json, key: string, path: string, dflt: boolean): boolean {
    const v = o[key]
    if (v === undefined) return dflt
    if (typeof v === 'boolean') return v
    this.fail(`${path}.${key}`, 'must be true or false')
    return dflt
  }

  oneOf<T extends string> (o: Json, key: string, path: string, values: readonly T[], dflt?: T): T {
    const v = o[key]
    if (v === undefined && dflt !== undefined) return dflt
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T
    this.fail(`${path}.${key}`, `must be one of ${values.join(', ')}`)
    return values[0] as T
  }
}

export interface ValidateOptions {
  /** Directory relative artifact paths and `modelRepository` resolve against. */
  readonly baseDir: string
  readonly source: string | null
}

export type ValidateResult =
  | { readonly ok: true; readonly config: PlatformConfig }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] }

export function validateConfig (raw: unknown, opts: ValidateOptions): ValidateResult {
  const c = new Checker()
  const root = c.object(raw, '$')
  if (root === null) return { ok: false, problems: c.problems }
  c.unknownKeys(root, '$', ['$schema', 'description', 'server', 'admin', 'modelRepository', 'serviceClasses', 'models', 'tenants', 'pricing', 'cost'])

  const s = c.object(root.server === undefined ? {} : root.server, '$.server') ?? {}
  c.unknownKeys(s, '$.server', ['host', 'port', 'maxBodyBytes', 'drainTimeoutMs', 'cpus', 'backgroundNice'])
  let gatewayCpus: number[] = []
  if (s.cpus !== undefined) {
    if (!Array.isArray(s.cpus) || s.cpus.length === 0 || !s.cpus.every((x) => Number.isInteger(x) && x >= 0 && x < 1024)) c.fail('$.server.cpus', 'must be a non-empty array of CPU ids (integers 0..1023)')
    else gatewayCpus = [...new Set(s.cpus as number[])].sort((a, b) => a - b)
  }
  const server = {
    host: c.string(s, 'host', '$.server', '127.0.0.1'),
    port: c.number(s, 'port', '$.server', { min: 0, max: 65535, int: true, dflt: 8000 }),
    maxBodyBytes: c.number(s, 'maxBodyBytes', '$.server', { min: 1024, int: true, dflt: 4 * 1024 * 1024 }),
    drainTimeoutMs: c.number(s, 'drainTimeoutMs', '$.server', { min: 0, int: true, dflt: 10_000 }),
    cpus: gatewayCpus,
    backgroundNice: c.number(s, 'backgroundNice', '$.server', { min: 0, max: 19, int: true, dflt: 10 }),
  }

  const ad = c.object(root.admin === undefined ? {} : root.admin, '$.admin') ?? {}
  c.unknownKeys(ad, '$.admin', ['tokens'])
  const admin = { tokenHashes: keyHashes(c, ad.tokens ?? [], '$.admin.tokens', true) }

  const repoRaw = root.modelRepository ?? 'models'
  let repo = opts.baseDir
  if (typeof repoRaw !== 'string' || repoRaw === '') c.fail('$.modelRepository', 'must be a directory path')
  else repo = isAbsolute(repoRaw) ? repoRaw : resolve(opts.baseDir, repoRaw)

  const serviceClasses = new Map<string, ServiceClassConfig>()
  const scRaw = c.object(root.serviceClasses, '$.serviceClasses') ?? {}
  if (Object.keys(scRaw).length === 0) c.fail('$.serviceClasses', 'must define at least one service class')
  for (const [id, v] of Object.entries(scRaw)) {
    const p = `$.serviceClasses.${id}`
    if (!ID.test(id)) c.fail(p, 'class id must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}')
    const o = c.object(v, p)
    if (o === null) continue
    c.unknownKeys(o, p, ['weight', 'runtime', 'cpus', 'nice', 'workers', 'device', 'deviceId', 'dedicated', 'maxQueued', 'lendTo', 'description'])
    const runtime = c.oneOf(o, 'runtime', p, ['workers', 'inline'] as const, 'workers')
    const inline = runtime === 'inline'
    if (inline) {
      // Batches run on the gateway thread: nothing of a worker pool applies.
      const why = 'an inline class runs on the gateway thread (pin that with server.cpus)'
      if (o.cpus !== undefined) c.fail(`${p}.cpus`, `must be left out: ${why}`)
      if (o.nice !== undefined) c.fail(`${p}.nice`, `must be left out: ${why}`)
      if (o.workers !== undefined) c.fail(`${p}.workers`, `must be left out: ${why}, one batch at a time`)
      if (o.device !== undefined && o.device !== 'cpu') c.fail(`${p}.device`, 'must be "cpu" for an inline class')
      if (o.lendTo !== undefined) c.fail(`${p}.lendTo`, 'must be left out: an inline class would run other classes\' batches on the gateway thread')
    }
    const cpus = o.cpus
    let cpuList: number[] = [] // an inline class has no CPU set of its own
    if (!inline) {
      if (!Array.isArray(cpus) || cpus.length === 0 || !cpus.every((x) => Number.isInteger(x) && x >= 0 && x < 1024)) {
        c.fail(`${p}.cpus`, 'must be a non-empty array of CPU ids (integers 0..1023)')
      } else {
        cpuList = [...new Set(cpus as number[])].sort((a, b) => a - b)
      }
    }
    const kind = c.oneOf(o, 'device', p, ['cpu', 'cuda'] as const, 'cpu')
    const device: DeviceConfig = kind === 'cuda'
      ? { kind, deviceId: c.number(o, 'deviceId', p, { min: 0, int: true, dflt: 0 }) }
      : { kind }
    serviceClasses.set(id, {
      id,
      weight: c.number(o, 'weight', p, { min: 1, max: 1000, int: true }),
      cpus: cpuList,
      // Negative values would need CAP_SYS_NICE; a class can only be made politer.
      nice: c.number(o, 'nice', p, { min: 0, max: 19, int: true, dflt: 0 }),
      workers: c.number(o, 'workers', p, { min: 1, max: 64, int: true, dflt: 1 }),
      device,
      dedicated: c.boolean(o, 'dedicated', p, false),
      maxQueued: c.number(o, 'maxQueued', p, { min: 1, max: 1_000_000, int: true, dflt: 1024 }),
      lendTo: inline ? [] : stringList(c, o.lendTo, `${p}.lendTo`),
      runtime,
    })
  }
  for (const sc of serviceClasses.values()) {
    sc.lendTo.forEach((to, i) => {
      if (!serviceClasses.has(to)) c.fail(`$.serviceClasses.${sc.id}.lendTo[${i}]`, `names no service class (have: ${[...serviceClasses.keys()].join(', ')})`)
      else if (to === sc.id) c.fail(`$.serviceClasses.${sc.id}.lendTo[${i}]`, 'a class cannot lend to itself')
    })
  }

  const models = new Map<string, ModelConfig>()
  const mRaw = c.object(root.models, '$.models') ?? {}
  for (const [id, v] of Object.entries(mRaw)) {
    const p = `$.models.${id}`
    if (!ID.test(id)) c.fail(p, 'model id must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}')
    const o = c.object(v, p)
    if (o === null) continue
    c.unknownKeys(o, p, ['modelClass', 'serviceClass', 'versions', 'defaultVersion', 'input', 'output', 'batching', 'description'])
    const serviceClass = o.serviceClass === undefined ? null : c.string(o, 'serviceClass', p)
    if (serviceClass !== null && serviceClass !== '' && !serviceClasses.has(serviceClass)) {
      c.fail(`${p}.serviceClass`, `names no service class (have: ${[...serviceClasses.keys()].join(', ')})`)
    }
    // Every tenant's requests for the model would run in that one tenant's own pool.
    if (serviceClass !== null && serviceClasses.get(serviceClass)?.dedicated === true) {
      c.fail(`${p}.serviceClass`, `class ${serviceClass} is dedicated to one tenant; a model cannot be pinned to it`)
    }
    const versions = new Map<string, ModelVersionConfig>()
    const vRaw = c.object(o.versions, `${p}.versions`) ?? {}
    if (Object.keys(vRaw).length === 0) c.fail(`${p}.versions`, 'must list at least one version')
    for (const [ver, vv] of Object.entries(vRaw)) {
      const vp = `${p}.versions.${ver}`
      if (!ID.test(ver)) c.fail(vp, 'version must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}')
      const vo = c.object(vv, vp)
      if (vo === null) continue
      c.unknownKeys(vo, vp, ['artifact', 'description'])
      const art = c.string(vo, 'artifact', vp)
      versions.set(ver, { version: ver, artifact: isAbsolute(art) ? art : resolve(repo, art) })
    }
    const defaultVersion = c.string(o, 'defaultVersion', p)
    if (defaultVersion !== '' && versions.size > 0 && !versions.has(defaultVersion)) {
      c.fail(`${p}.defaultVersion`, `names no version of this model (have: ${[...versions.keys()].join(', ')})`)
    }
    const b = c.object(o.batching ?? {}, `${p}.batching`) ?? {}
    c.unknownKeys(b, `${p}.batching`, ['maxBatchSize', 'maxRowsPerRequest', 'maxQueueDelayUs'])
    const maxBatchSize = c.number(b, 'maxBatchSize', `${p}.batching`, { min: 1, max: 4096, int: true, dflt: 32 })
    const maxRowsPerRequest = c.number(b, 'maxRowsPerRequest', `${p}.batching`, { min: 1, max: 4096, int: true, dflt: maxBatchSize })
    if (maxRowsPerRequest > maxBatchSize) c.fail(`${p}.batching.maxRowsPerRequest`, 'must be <= maxBatchSize')
    models.set(id, {
      id,
      modelClass: c.string(o, 'modelClass', p),
      serviceClass: serviceClass === '' ? null : serviceClass,
      versions,
      defaultVersion,
      input: tensor(c, o.input, `${p}.input`),
      output: tensor(c, o.output, `${p}.output`),
      maxBatchSize,
      maxRowsPerRequest,
      maxQueueDelayUs: c.number(b, 'maxQueueDelayUs', `${p}.batching`, { min: 0, max: MAX_BATCH_WAIT_US, int: true, dflt: 0 }),
    })
  }

  const tenants = new Map<string, TenantConfig>()
  const seenKeys = new Map<string, string>()
  const tRaw = c.object(root.tenants, '$.tenants') ?? {}
  for (const [id, v] of Object.entries(tRaw)) {
    const p = `$.tenants.${id}`
    if (!ID.test(id)) c.fail(p, 'tenant id must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}')
    const o = c.object(v, p)
    if (o === null) continue
    c.unknownKeys(o, p, ['tier', 'weight', 'apiKeys', 'models', 'queueClass', 'limits', 'region', 'costCenter', 'rolloutEligible', 'settings', 'description'])
    const tier: Tier = c.oneOf(o, 'tier', p, TIERS)
    const keys = keyHashes(c, o.apiKeys, `${p}.apiKeys`, false)
    keys.forEach((h, i) => {
      const other = seenKeys.get(h)
      if (other !== undefined) c.fail(`${p}.apiKeys[${i}]`, `the same key is also given to tenant ${other}`)
      // A tenant key that is also an admin token would let that tenant read every tenant's numbers.
      if (admin.tokenHashes.includes(h)) c.fail(`${p}.apiKeys[${i}]`, 'is also listed in $.admin.tokens: an operator token must never be a tenant key')
      seenKeys.set(h, id)
    })
    const queueClass = c.string(o, 'queueClass', p)
    const qc = serviceClasses.get(queueClass)
    if (queueClass !== '' && qc === undefined) c.fail(`${p}.queueClass`, `names no service class (have: ${[...serviceClasses.keys()].join(', ')})`)
    if (tier === 'dedicated' && qc !== undefined && !qc.dedicated) c.fail(`${p}.queueClass`, 'a dedicated tenant needs a service class with "dedicated": true')
    if (tier !== 'dedicated' && qc?.dedicated === true) c.fail(`${p}.queueClass`, `class ${queueClass} is dedicated; only tier "dedicated" may use it`)
    const tm = new Map<string, string>()
    const mm = c.object(o.models, `${p}.models`) ?? {}
    for (const [mid, ver] of Object.entries(mm)) {
      const model = models.get(mid)
      if (model === undefined) { c.fail(`${p}.models.${mid}`, 'names no model in $.models'); continue }
      if (ver !== 'default' && (typeof ver !== 'string' || !model.versions.has(ver))) {
        const quoted = typeof ver === 'number' && model.versions.has(String(ver)) ? ` (a string: "${ver}")` : ''
        c.fail(`${p}.models.${mid}`, `must be "default" or a version of ${mid}${quoted} (have: ${[...model.versions.keys()].map((k) => `"${k}"`).join(', ')})`)
        continue
      }
      tm.set(mid, ver === 'default' ? model.defaultVersion : ver)
    }
    const l = c.object(o.limits, `${p}.limits`) ?? {}
    c.unknownKeys(l, `${p}.limits`, ['concurrency', 'ratePerSecond', 'burst', 'queueDepth', 'timeoutMs', 'maxBatchWaitUs'])
    const lp = `${p}.limits`
    const settings = o.settings === undefined ? {} : c.object(o.settings, `${p}.settings`) ?? {}
    const limits = {
      concurrency: c.number(l, 'concurrency', lp, { min: 1, max: 1_000_000, int: true }),
      ratePerSecond: c.number(l, 'ratePerSecond', lp, { min: 0, max: 1_000_000 }),
      burst: c.number(l, 'burst', lp, { min: 1, max: 1_000_000, int: true }),
      queueDepth: c.number(l, 'queueDepth', lp, { min: 1, max: 1_000_000, int: true }),
      timeoutMs: c.number(l, 'timeoutMs', lp, { min: 1, max: 600_000, int: true }),
      maxBatchWaitUs: l.maxBatchWaitUs === undefined ? null : c.number(l, 'maxBatchWaitUs', lp, { min: 0, max: MAX_BATCH_WAIT_US, int: true }),
    }
    // The admission table keeps the GCRA interval (1/rate) and the burst
    // credit ((burst - 1) / rate) as Int32 microseconds, the credit capped at
    // 2^30 µs: a rate or burst past those would be silently wrong, not refused.
    if (limits.ratePerSecond > 0) {
      const enforced = 1e6 / Math.max(1, Math.round(1e6 / limits.ratePerSecond))
      if (limits.ratePerSecond < 0.001) c.fail(`${lp}.ratePerSecond`, 'must be 0 (no limit) or at least 0.001 requests/s')
      // Up to 10,000/s the rounding is within 0.5%; above, only rates near 1,000,000 / n are exact.
      else if (Math.abs(enforced - limits.ratePerSecond) / limits.ratePerSecond > 0.01) c.fail(`${lp}.ratePerSecond`, `would be enforced as ${Math.round(enforced)} requests/s (the admission counters keep 1/rate in whole microseconds); use a rate within 1% of 1,000,000 / n, such as ${Math.round(enforced)}, or 0 for no limit`)
      else if ((limits.burst - 1) * 1e6 / limits.ratePerSecond > 2 ** 30) c.fail(`${lp}.burst`, `allows more than ${Math.floor(2 ** 30 / 1e6)} s of credit at ${limits.ratePerSecond} requests/s (burst / ratePerSecond); lower burst or raise the rate`)
    }
    tenants.set(id, {
      id,
      tier,
      weight: c.number(o, 'weight', p, { min: 1, max: 1000, int: true, dflt: TIER_WEIGHTS[tier] }),
      apiKeyHashes: keys,
      models: tm,
      queueClass,
      limits,
      region: c.string(o, 'region', p),
      costCenter: c.string(o, 'costCenter', p),
      rolloutEligible: c.boolean(o, 'rolloutEligible', p, false),
      settings,
    })
  }
  if (tenants.size === 0) c.fail('$.tenants', 'must define at least one tenant')

  const priced = validatePriceTable(root.pricing, '$.pricing')
  for (const pr of priced.problems) c.fail(pr.path, pr.message)
  if (priced.table !== null) {
    const gaps = checkPriceCoverage(priced.table, [...models.values()].map((m) => m.modelClass), [...tenants.values()].map((t) => t.tier), '$.pricing')
    for (const g of gaps) c.fail(g.path, g.message)
  }
  const cost = costConfig(c, root.cost === undefined ? {} : root.cost, opts.baseDir)

  if (c.problems.length > 0 || priced.table === null) return { ok: false, problems: c.problems }
  return { ok: true, config: { source: opts.source, server, admin, serviceClasses, models, tenants, pricing: priced.table, cost } }
}

/** `$.cost`: where cost events go. Relative directories resolve against the config file. */
function costConfig (c: Checker, v: unknown, baseDir: string): CostConfig {
  const p = '$.cost'
  const o = c.object(v, p) ?? {}
  c.unknownKeys(o, p, ['enabled', 'backend', 'dataDir', 'url', 'username', 'database', 'spoolDir', 'batchRows', 'flushMs', 'insertMs'])
  const dir = (key: string, dflt: string): string => {
    const d = c.string(o, key, p, dflt)
    return isAbsolute(d) ? d : resolve(baseDir, d)
  }
  const kind = c.oneOf(o, 'backend', p, ['embedded', 'http'] as const, 'embedded')
  let backend: CostBackendConfig
  if (kind === 'http') {
    const url = c.string(o, 'url', p)
    if (url !== '' && !/^https?:\/\//.test(url)) c.fail(`${p}.url`, 'must be an http:// or https:// URL')
    // The password never sits in the config file: it comes from the environment.
    backend = {
      kind,
      url,
      username: c.string(o, 'username', p, 'default'),
      database: c.string(o, 'database', p, 'default'),
      ...(process.env.FAIRWAY_COST_PASSWORD === undefined ? {} : { password: process.env.FAIRWAY_COST_PASSWORD }),
    }
  } else {
    backend = { kind, dataDir: dir('dataDir', 'var/cost/chdb') }
  }
  return {
    enabled: c.boolean(o, 'enabled', p, true),
    backend,
    spoolDir: dir('spoolDir', 'var/cost/spool'),
    batchRows: c.number(o, 'batchRows', p, { min: 1, max: 1_000_000, int: true, dflt: 100_000 }),
    flushMs: c.number(o, 'flushMs', p, { min: 10, max: 60_000, int: true, dflt: 1000 }),
    insertMs: c.number(o, 'insertMs', p, { min: 0, max: 600_000, int: true, dflt: defaultInsertMs(backend) }),
  }
}

/** Validates a list of "sha256:<hex>" key hashes; returns the hex digests. */
function keyHashes (c: Checker, v: unknown, path: string, mayBeEmpty: boolean): string[] {
  if (!Array.isArray(v) || (!mayBeEmpty && v.length === 0)) {
    c.fail(path, 'must be a non-empty array of "sha256:<64 hex>" key hashes')
    return []
  }
  const out: string[] = []
  v.forEach((k, i) => {
    const hex = typeof k === 'string' && k.startsWith('sha256:') ? k.slice(7) : null
    if (hex === null || !SHA256_HEX.test(hex)) c.fail(`${path}[${i}]`, 'must be "sha256:<64 lowercase hex>"; store key hashes, never keys (fairway keys hash <key>)')
    else out.push(hex)
  })
  return out
}

function stringList (c: Checker, v: unknown, path: string): string[] {
  if (v === undefined) return []
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[]
  c.fail(path, 'must be an array of service class ids')
  return []
}

function tensor (c: Checker, v: unknown, path: string): TensorSpec {
  const o = c.object(v, path) ?? {}
  c.unknownKeys(o, path, ['name', 'datatype', 'shape'])
  const shape = o.shape
  let s: number[] = []
  if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== -1 || !Number.isInteger(shape[1]) || (shape[1] as number) < 1) {
    c.fail(`${path}.shape`, 'must be [-1, N]: a batch dimension then a positive feature count')
  } else {
    s = shape as number[]
  }
  return { name: c.string(o, 'name', path), datatype: c.oneOf<Datatype>(o, 'datatype', path, DATATYPES), shape: s }
}
