// The versioned price table and the one cost formula. Every cost event
// records the table version it was priced with, so a price change never
// rewrites history: old events keep their old price, and a re-pricing is a
// query over compute_seconds, not an update.
//
//   cost = perRequestUsd + compute_seconds × perComputeSecondUsd[model class] × tierMultiplier[tier]
//
// rounded to 1e-12 USD (the scale of the stored Decimal), so the number the
// gateway computes is exactly the number ClickHouse stores and sums.

export interface PriceTable {
  version: string
  /** USD per second of worker compute, per model class (light, mid, heavy, ...). '*' is the fallback. */
  perComputeSecondUsd: Record<string, number>
  /** Flat USD per request, served or refused. */
  perRequestUsd: number
  /** Multiplier on the compute part, per tenant tier. '*' is the fallback; a missing tier is 1. */
  tierMultiplier: Record<string, number>
  /** What one node costs per hour; pools get a share of it in capacity_hours. */
  nodeCostPerHourUsd: number
}

export interface PriceProblem {
  readonly path: string
  readonly message: string
}

/** Decimal places of stored USD amounts (Decimal(18, 12) per event, Decimal(38, 12) in sums). */
export const USD_SCALE = 12

export function roundUsd (usd: number): number {
  return Math.round(usd * 1e12) / 1e12
}

/**
 * Cost of one request. Refused requests pass computeSeconds 0 and pay the
 * per-request fee only. An unknown class costs the '*' price (else 0) and an
 * unknown tier gets the '*' multiplier (else 1): the request path never
 * throws; checkPriceCoverage reports such gaps when the config is loaded.
 */
export function costOf (table: PriceTable, modelClass: string, tier: string, computeSeconds: number): number {
  const price = table.perComputeSecondUsd[modelClass] ?? table.perComputeSecondUsd['*'] ?? 0
  const mult = table.tierMultiplier[tier] ?? table.tierMultiplier['*'] ?? 1
  const cs = computeSeconds > 0 ? computeSeconds : 0 // also maps NaN to 0
  return roundUsd(table.perRequestUsd + cs * price * mult)
}

/** Idle-split input: what a pool of `poolCpus` of the node's `nodeCpus` costs for one hour. */
export function poolCostPerHour (table: PriceTable, poolCpus: number, nodeCpus: number): number {
  if (!(nodeCpus > 0) || !(poolCpus > 0)) return 0
  return roundUsd(table.nodeCostPerHourUsd * Math.min(poolCpus, nodeCpus) / nodeCpus)
}

const ALLOWED = ['version', 'perComputeSecondUsd', 'perRequestUsd', 'tierMultiplier', 'nodeCostPerHourUsd', 'description']

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/**
 * Checks `$.pricing` of a platform config (or any raw JSON) and returns the
 * normalised table, or null and every problem found, each with its JSON path.
 */
export function validatePriceTable (raw: unknown, path: string): { table: PriceTable | null, problems: PriceProblem[] } {
  const problems: PriceProblem[] = []
  const fail = (p: string, message: string): void => { problems.push({ path: p, message }) }
  if (!isObject(raw)) {
    fail(path, 'must be an object')
    return { table: null, problems }
  }
  for (const k of Object.keys(raw)) if (!ALLOWED.includes(k)) fail(`${path}.${k}`, `unknown field (allowed: ${ALLOWED.join(', ')})`)

  let version = ''
  if (typeof raw.version !== 'string' || raw.version.trim() === '') fail(`${path}.version`, raw.version === undefined ? 'is required' : 'must be a non-empty string')
  else if (raw.version.length > 64 || /[\t\n\r\\]/.test(raw.version)) fail(`${path}.version`, 'must be at most 64 characters, without tabs, newlines or backslashes')
  else version = raw.version

  const amount = (key: string): number => {
    const v = raw[key]
    if (typeof v !== 'number' || !Number.isFinite(v)) { fail(`${path}.${key}`, v === undefined ? 'is required' : 'must be a number'); return 0 }
    if (v < 0) { fail(`${path}.${key}`, 'must be >= 0'); return 0 }
    return v
  }
  const perRequestUsd = amount('perRequestUsd')
  const nodeCostPerHourUsd = amount('nodeCostPerHourUsd')

  const record = (key: string, required: boolean): Record<string, number> => {
    const out: Record<string, number> = Object.create(null) as Record<string, number>
    const v = raw[key]
    if (v === undefined && !required) return out
    if (!isObject(v)) { fail(`${path}.${key}`, v === undefined ? 'is required' : 'must be an object of name: number'); return out }
    const keys = Object.keys(v)
    if (required && keys.length === 0) fail(`${path}.${key}`, 'must price at least one model class')
    for (const k of keys) {
      const x = v[k]
      if (k.trim() === '') fail(`${path}.${key}`, 'names must be non-empty')
      else if (typeof x !== 'number' || !Number.isFinite(x)) fail(`${path}.${key}.${k}`, 'must be a number')
      else if (x < 0) fail(`${path}.${key}.${k}`, 'must be >= 0')
      else out[k] = x
    }
    return Object.freeze(out)
  }
  const perComputeSecondUsd = record('perComputeSecondUsd', true)
  const tierMultiplier = record('tierMultiplier', false)

  if (problems.length > 0) return { table: null, problems }
  return { table: Object.freeze({ version, perComputeSecondUsd, perRequestUsd, tierMultiplier, nodeCostPerHourUsd }), problems }
}

/**
 * Gaps between a price table and the config that uses it: model classes
 * without a price and tiers without a multiplier, unless '*' covers them.
 * Tiers without a multiplier are only a problem when no '*' exists and the
 * operator listed some tiers (an empty tierMultiplier means "all 1").
 */
export function checkPriceCoverage (table: PriceTable, modelClasses: Iterable<string>, tiers: Iterable<string>, path: string): PriceProblem[] {
  const problems: PriceProblem[] = []
  const classes = table.perComputeSecondUsd
  if (classes['*'] === undefined) {
    for (const c of new Set(modelClasses)) if (classes[c] === undefined) problems.push({ path: `${path}.perComputeSecondUsd`, message: `has no price for model class ${c}` })
  }
  const mult = table.tierMultiplier
  if (mult['*'] === undefined && Object.keys(mult).length > 0) {
    for (const t of new Set(tiers)) if (mult[t] === undefined) problems.push({ path: `${path}.tierMultiplier`, message: `has no multiplier for tier ${t}` })
  }
  return problems
}
