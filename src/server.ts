// Composes a running fairway: registry -> admission counters -> one pool and
// scheduler per service class -> uWS gateway. `startServer` resolves once every
// worker is pinned and warm and the socket listens; `close` drains gracefully.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { us_listen_socket } from '@trufflesuite/uws-js-unofficial'
import { TenantCounters } from './admission/tenant-counters.js'
import type { PlatformConfig } from './control-plane/config-types.js'
import { TenantRegistry } from './control-plane/registry.js'
import { registerRoutes, type GatewayState } from './gateway/http-routes.js'
import { loadUws } from './gateway/uws.js'
import { affinityLoadError, loadAffinity, packageRoot } from './runtime/affinity.js'
import { ClassPool } from './runtime/class-pool.js'
import type { PingResult } from './runtime/worker-protocol.js'
import { ClassScheduler } from './scheduling/class-scheduler.js'

export interface StartOptions {
  readonly config: PlatformConfig
  /** Overrides config.server.port (0 = ephemeral). */
  readonly port?: number
  readonly host?: string
  /** Where start-up notices go (default: console.warn). */
  readonly warn?: (msg: string) => void
}

export interface RunningServer {
  readonly host: string
  readonly port: number
  readonly registry: TenantRegistry
  readonly counters: TenantCounters
  readonly schedulers: ReadonlyMap<string, ClassScheduler>
  /** What each worker reported at start (class, pinned CPUs, thread id). */
  readonly workers: readonly PingResult[]
  /** Stops accepting, waits for in-flight requests (up to drainTimeoutMs), closes pools. */
  close (): Promise<void>
}

export const VERSION: string = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version

export async function startServer (opts: StartOptions): Promise<RunningServer> {
  const warn = opts.warn ?? ((m: string) => console.warn(m))
  const uws = loadUws()
  const registry = new TenantRegistry(opts.config)
  const counters = new TenantCounters(registry.tenants.length)
  for (const t of registry.tenants) counters.setCap(t.slot, t.config.limits.concurrency)

  if (loadAffinity() === null) warn(`fairway: CPU pinning disabled, workers run unpinned: ${affinityLoadError() ?? 'addon not loaded'}`)

  const pools: ClassPool[] = []
  const schedulers = new Map<string, ClassScheduler>()
  const workers: PingResult[] = []
  try {
    const starting: Array<Promise<PingResult[]>> = []
    for (const sc of opts.config.serviceClasses.values()) {
      const units = registry.unitsOfClass(sc.id)
      if (units.length === 0) continue // a class no tenant routes to needs no threads
      const pool = new ClassPool(sc, units)
      pools.push(pool)
      schedulers.set(sc.id, new ClassScheduler(pool, units))
      starting.push(pool.start())
    }
    // allSettled: every pool must finish starting before we can close them all.
    const results = await Promise.allSettled(starting)
    for (const r of results) {
      if (r.status === 'rejected') throw r.reason
      workers.push(...r.value)
    }
  } catch (err) {
    await Promise.all(pools.map((p) => p.close()))
    throw err
  }

  const state: GatewayState = { ready: false, draining: false }
  const app = uws.App()
  registerRoutes(app, { registry, counters, schedulers, state, version: VERSION })
  const host = opts.host ?? opts.config.server.host
  const wantPort = opts.port ?? opts.config.server.port
  const listenSocket = await new Promise<us_listen_socket | false>((resolve) => {
    app.listen(host, wantPort, (s) => { resolve(s) })
  })
  if (listenSocket === false) {
    await Promise.all(pools.map((p) => p.close()))
    throw new Error(`fairway: cannot listen on ${host}:${wantPort} (address in use or not permitted)`)
  }
  const port = uws.us_socket_local_port(listenSocket)
  state.ready = true

  let closing: Promise<void> | null = null
  const close = (): Promise<void> => {
    closing ??= (async () => {
      state.draining = true
      uws.us_listen_socket_close(listenSocket)
      const until = Date.now() + opts.config.server.drainTimeoutMs
      while (counters.totalInflight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5))
      await Promise.all(pools.map((p) => p.close()))
    })()
    return closing
  }
  return { host, port, registry, counters, schedulers, workers, close }
}
