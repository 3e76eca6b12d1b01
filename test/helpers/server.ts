// Starts a real fairway (uWS on 127.0.0.1, Piscina workers, onnxruntime) on an
// ephemeral port for a test file, from the demo config or a variant of it.

import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { checkConfig } from '../../src/control-plane/load-config.js'
import type { PlatformConfig, ServiceClassConfig } from '../../src/control-plane/config-types.js'
import { TenantRegistry, type ExecutableUnit } from '../../src/control-plane/registry.js'
import { startServer, type RunningServer } from '../../src/server.js'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const DEMO_CONFIG_FILE = join(ROOT, 'config', 'demo-platform.json')

export const KEYS = {
  acme: 'fw_demo_acme_premium',
  globex: 'fw_demo_globex_shared',
  initech: 'fw_demo_initech_shared',
  umbrella: 'fw_demo_umbrella_semi',
  wayne: 'fw_demo_wayne_dedicated',
} as const

export type RawConfig = Record<string, any>

/**
 * The demo config, with cost events off: libchdb allows one data directory
 * per process and most test files start several servers. The cost tests
 * turn it back on with their own directory.
 */
export function demoRaw (): RawConfig {
  const raw = JSON.parse(readFileSync(DEMO_CONFIG_FILE, 'utf8')) as RawConfig
  raw.cost = { enabled: false }
  return raw
}

export function configFrom (raw: RawConfig): PlatformConfig {
  const res = checkConfig(raw, dirname(DEMO_CONFIG_FILE), 'test')
  if (!res.ok) throw new Error(JSON.stringify(res.problems))
  return res.config
}

/** A service class of `config`, the units it serves, and its tiny-classifier unit (for pool tests). */
export function classUnits (config: PlatformConfig, classId: string): { sc: ServiceClassConfig, units: ExecutableUnit[], tiny: ExecutableUnit } {
  const sc = config.serviceClasses.get(classId)
  if (sc === undefined) throw new Error(`config has no ${classId} class`)
  const units = new TenantRegistry(config).unitsOfClass(classId)
  const tiny = units.find((u) => u.model.id === 'tiny-classifier')
  if (tiny === undefined) throw new Error(`class ${classId} does not serve tiny-classifier`)
  return { sc, units, tiny }
}

export async function start (raw: RawConfig = demoRaw()): Promise<{ server: RunningServer, url: string }> {
  const server = await startServer({ config: configFrom(raw), port: 0, warn: () => {} })
  return { server, url: `http://127.0.0.1:${server.port}` }
}

export interface Reply {
  status: number
  headers: Headers
  json: any
}

export async function call (url: string, path: string, opts: { method?: string, key?: string, body?: unknown, raw?: string | Uint8Array, headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers }
  if (opts.key !== undefined) headers.authorization = `Bearer ${opts.key}`
  let body: string | Uint8Array | undefined
  if (opts.raw !== undefined) body = opts.raw
  else if (opts.body !== undefined) { body = JSON.stringify(opts.body); headers['content-type'] ??= 'application/json' }
  const res = await fetch(url + path, { method: opts.method ?? (body === undefined ? 'GET' : 'POST'), headers, body })
  const text = await res.text()
  let json: any = null
  try { json = JSON.parse(text) } catch { json = text }
  return { status: res.status, headers: res.headers, json }
}

export function inferBody (name: string, rows: number, dim: number, data: ArrayLike<number>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { inputs: [{ name, datatype: 'FP32', shape: [rows, dim], data: Array.from(data) }], ...extra }
}

/**
 * A fault injector around a class's real pool: the first batch runs as usual,
 * but its result is held back until release(), so the class's worker is
 * busy for as long as a test needs (a fact, not a guess about timing).
 * `ran` counts the batches the pool has finished running. Undone at teardown.
 */
export function holdFirstBatch (t: { teardown: (fn: () => void) => void }, scheduler: unknown): { release: () => void, readonly ran: number } {
  const pool = (scheduler as { pool: { run: (task: unknown) => Promise<unknown> } }).pool
  const run = pool.run.bind(pool)
  let release = (): void => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  let ran = 0
  pool.run = async (task) => {
    const res = await run(task)
    if (ran++ === 0) await gate
    return res
  }
  t.teardown(() => { pool.run = run; release() })
  return { release: () => { release() }, get ran () { return ran } }
}
