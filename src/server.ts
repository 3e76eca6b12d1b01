// Composes a running fairway: registry -> admission counters -> one pool and
// scheduler per service class -> uWS gateway. `startServer` resolves once every
// worker is pinned and warm and the socket listens; `close` drains gracefully.

import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import type { us_listen_socket } from '@trufflesuite/uws-js-unofficial'
import { AdmissionTable } from './admission/admission-table.js'
import type { PlatformConfig } from './control-plane/config-types.js'
import { TenantRegistry } from './control-plane/registry.js'
import { registerRoutes, type GatewayState } from './gateway/http-routes.js'
import { InferenceService } from './gateway/inference-service.js'
import { loadUws } from './gateway/uws.js'
import { registerWebSocket } from './gateway/ws-routes.js'
import { affinityLoadError, loadAffinity, packageRoot } from './runtime/affinity.js'
import type { BatchPool } from './runtime/batch-pool.js'
import { ClassPool } from './runtime/class-pool.js'
import type { PingResult } from './runtime/worker-protocol.js'
import { ClassScheduler } from './scheduling/class-scheduler.js'
import { GatewayMetrics } from './telemetry/metrics.js'
import { CapacityReporter } from './telemetry/capacity-reporter.js'
import { CostRecorder } from './gateway/cost-recorder.js'
import { CostPipeline } from './cost/index.js'
import { BackgroundNice } from './runtime/background-nice.js'
import { fwError } from './errors.js'
import { configError } from './control-plane/load-config.js'

export interface StartOptions {
  readonly config: PlatformConfig
  /** Overrides config.server.port (0 = ephemeral). */
  readonly port?: number
  readonly host?: string
  /** Dynamic batching across requests (default true; false only to measure its effect). */
  readonly batching?: boolean
  /** Where start-up notices go (default: console.warn). */
  readonly warn?: (msg: string) => void
}

export interface RunningServer {
  readonly host: string
  readonly port: number
  readonly registry: TenantRegistry
  readonly admission: AdmissionTable
  readonly schedulers: ReadonlyMap<string, ClassScheduler>
  readonly metrics: GatewayMetrics
  /** The cost pipeline (null when `cost.enabled` is false). */
  readonly cost: CostPipeline | null
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
  const admission = new AdmissionTable(registry.tenants.length, registry.classSlots.size)
  for (const t of registry.tenants) admission.setTenantPolicy(t.slot, t.config.limits)
  for (const [id, slot] of registry.classSlots) admission.setClassShed(slot, opts.config.serviceClasses.get(id)?.maxQueued ?? 1)
  const weights = registry.tenants.map((t) => t.config.weight)
  const weightOf = (flow: number): number => weights[flow] ?? 1

  const affinity = loadAffinity()
  if (affinity === null) warn(`fairway: CPU pinning disabled, workers run unpinned: ${affinityLoadError() ?? 'addon not loaded'}`)
  else {
    // CPU sets are checked against the CPUs this machine has online (the
    // config may come from a bigger machine): a missing CPU is a config
    // problem naming its class, not a worker failing with EINVAL. Not this
    // thread's mask: a second start in one process, or a `taskset`, narrows
    // that while workers may still widen theirs.
    const allowed = new Set(cpus().map((_c, i) => i))
    const problems: Array<{ path: string, message: string }> = []
    const check = (path: string, set: readonly number[]): void => {
      const missing = set.filter((c) => !allowed.has(c))
      if (missing.length > 0) problems.push({ path, message: `CPU ${missing.join(', ')} is not online on this machine (it has CPUs 0..${allowed.size - 1})` })
    }
    check('$.server.cpus', opts.config.server.cpus)
    for (const sc of opts.config.serviceClasses.values()) check(`$.serviceClasses.${sc.id}.cpus`, sc.cpus)
    if (problems.length > 0) throw configError(opts.config.source ?? 'the platform config', problems)
    if (opts.config.server.cpus.length > 0) affinity.setThreadAffinity(opts.config.server.cpus)
  }

  const pools: BatchPool[] = []
  const schedulers = new Map<string, ClassScheduler>()
  const workers: PingResult[] = []
  try {
    const starting: Array<Promise<PingResult[]>> = []
    for (const sc of opts.config.serviceClasses.values()) {
      const units = registry.unitsOfClass(sc.id)
      // Workers also load the models of the classes they lend to.
      const served = [...units, ...sc.lendTo.flatMap((id) => registry.unitsOfClass(id))]
      if (served.length === 0) continue // a class with nothing to serve needs no threads
      // The inline pool is imported only when a class uses it: it loads onnxruntime on this thread.
      const pool: BatchPool = sc.runtime === 'inline'
        ? new (await import('./runtime/inline-pool.js')).InlinePool(sc, served)
        : new ClassPool(sc, served)
      pools.push(pool)
      schedulers.set(sc.id, new ClassScheduler(pool, units, admission, registry.classSlots.get(sc.id) ?? 0, weightOf, opts.batching ?? true))
      starting.push(pool.start())
    }
    for (const sc of opts.config.serviceClasses.values()) {
      const borrowers = sc.lendTo.flatMap((id) => schedulers.get(id) ?? [])
      if (borrowers.length > 0) schedulers.get(sc.id)?.lendTo(borrowers)
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

  // Workers are running and have named themselves: from now on, every other
  // thread of the process is background work. Needs the addon (workers name
  // themselves through it); without it nothing could tell them apart.
  let background: BackgroundNice | null = null
  if (affinity !== null && opts.config.server.backgroundNice > 0) {
    background = new BackgroundNice(opts.config.server.backgroundNice)
    background.start()
  }

  const state: GatewayState = { ready: false, draining: false }
  const app = uws.App()
  const metrics = new GatewayMetrics()
  let cost: CostPipeline | null = null
  let capacity: CapacityReporter | null = null
  if (opts.config.cost.enabled) {
    const cc = opts.config.cost
    try {
      cost = await CostPipeline.start({ backend: cc.backend, spoolDir: cc.spoolDir, batchRows: cc.batchRows, flushMs: cc.flushMs, insertMs: cc.insertMs })
    } catch (err) {
      await Promise.all(pools.map((p) => p.close()))
      throw err
    }
    capacity = new CapacityReporter(cost, opts.config.pricing, [...schedulers.values()].map((s) => s.pool.serviceClass))
    capacity.start()
  }
  const service = new InferenceService(admission, schedulers, metrics, cost === null ? null : new CostRecorder(cost, opts.config.pricing))
  // The WebSocket route is registered before the HTTP catch-all.
  const ws = registerWebSocket(app, registry, service, () => state.draining)
  registerRoutes(app, { registry, service, state, version: VERSION })
  const host = opts.host ?? opts.config.server.host
  const wantPort = opts.port ?? opts.config.server.port
  // Exclusive: without it uWS sets SO_REUSEPORT, and a second fairway on the
  // same port "succeeds" and takes half the connections, with admission,
  // metrics and cost of its own (a review saw it). uWS's types lack the
  // (host, port, options, cb) form its addon takes.
  type ListenWithOptions = (host: string, port: number, options: number, cb: (s: us_listen_socket | false) => void) => unknown
  const listenSocket = await new Promise<us_listen_socket | false>((resolve) => {
    (app.listen as unknown as ListenWithOptions).call(app, host, wantPort, 1 /* ListenOptions.LIBUS_LISTEN_EXCLUSIVE_PORT */, (s) => { resolve(s) })
  })
  if (listenSocket === false) {
    background?.stop()
    await capacity?.stop()
    await cost?.close()
    await Promise.all(pools.map((p) => p.close()))
    throw fwError('FW_ERR_SERVER_LISTEN', `${host}:${wantPort}`)
  }
  const port = uws.us_socket_local_port(listenSocket)
  state.ready = true
  const refresher = setInterval(() => { admission.refresh(admission.nowUs()) }, 5000)
  refresher.unref()

  let closing: Promise<void> | null = null
  const close = (): Promise<void> => {
    closing ??= (async () => {
      state.draining = true
      uws.us_listen_socket_close(listenSocket)
      const until = Date.now() + opts.config.server.drainTimeoutMs
      while (admission.totalInflight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5))
      ws.closeAll()
      clearInterval(refresher)
      background?.stop()
      for (const s of schedulers.values()) s.stop()
      await Promise.all(pools.map((p) => p.close()))
      // Last: every answered request has emitted its event; close flushes
      // them to ClickHouse (or leaves them in the spool for the next start).
      try {
        await capacity?.stop()
      } catch (err) {
        console.error(`fairway: last capacity record not stored: ${err instanceof Error ? err.message : String(err)}`)
      } finally {
        await cost?.close()
      }
    })()
    return closing
  }
  return { host, port, registry, admission, schedulers, metrics, cost, workers, close }
}
