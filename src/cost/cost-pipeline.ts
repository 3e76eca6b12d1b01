// Per-request cost events, from the gateway to ClickHouse. The gateway
// thread only pushes events into a bounded ring (emit: typed-array stores,
// no allocation, never throws); full pages of the ring are transferred to
// ONE sink worker thread that owns the spool and ClickHouse (cost-sink.ts).
//
//   emit ──> ring pages ──transfer──> sink: Native batch ──fsync──> spool file
//                                            └──> INSERT (token = batch id) ──ack──> delete spool file
//
// At-least-once (spool before insert, delete after ack, replay at start)
// plus deduplication by batch token gives exactly-once in the store; see
// docs/cost.md for the argument and its limits.

import { createRequire } from 'node:module'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { encodeCapacity, type CapacityRecord } from './capacity-record.js'
import type { CostBackendConfig, QueryFormat } from './clickhouse-backend.js'
import { CostError, errorText } from './cost-error.js'
import type { CostEvent } from './cost-event.js'
import type { PageMessage } from './event-page.js'
import { EventRing } from './event-ring.js'
import type { FaultOptions } from './fault-injector.js'
import { C, Counters, type CloseResult, type FromSink, type SinkInit, type ToSink } from './sink-protocol.js'

export type { CostBackendConfig, QueryFormat } from './clickhouse-backend.js'
export type { CapacityRecord } from './capacity-record.js'
export type { FaultOptions } from './fault-injector.js'

export interface CostPipelineOptions {
  backend: CostBackendConfig
  /** Directory of the durable spool; one live pipeline per directory. */
  spoolDir: string
  /**
   * Rows per insert (default 250 000; a batch is also cut flushMs after its
   * first event, so this only matters above batchRows / flushMs events/s).
   * Bigger batches cost less per row — fewer parts to write and to merge:
   * 100k-row batches took ~1.3× the sink CPU per event of 250k-row ones,
   * measured — and cost ~120 bytes of sink memory per row.
   */
  batchRows?: number
  /**
   * A batch is cut (and spooled: durable) at most this long after its first
   * event was emitted (default 1000 ms), plus the spool write: the length of
   * a flush period (see startPeriod).
   */
  flushMs?: number
  /**
   * Spooled batches wait up to this long and go to ClickHouse together, as
   * one insert of up to batchRows rows; flush(), close() and a fresh
   * query() do not wait. Default (defaultInsertMs) 30 000 ms embedded,
   * 3 000 ms for a server, whose other readers see only what is inserted
   * (3 s keeps emit → visible there under 5 s). Not what a crash loses (that
   * is flushMs). An insert costs ~25–40 ms of CPU here whatever its size, so
   * at batch-1 request rates this sets most of the sink's CPU
   * (perf/bench-cost-rate.ts, docs/cost.md).
   */
  insertMs?: number
  /** Events the ring holds before emit() drops (default 65 536, ~9.4 MB). */
  ringCapacity?: number
  /** Bytes of batches the spool may hold while ClickHouse is unreachable (default 1 GiB, ~5M events). */
  spoolMaxBytes?: number
  /** Fills node_id of events that have none, and of capacity records (default os.hostname()). */
  nodeId?: string
  /** Warnings and errors, one line each (default: console.error with a "fairway: " prefix). */
  log?: (msg: string) => void
  /** First retry delay after a failed insert (default 250 ms); doubles up to retryMaxMs (default 30 s). */
  retryBaseMs?: number
  retryMaxMs?: number
  /** Start gives up after this long (default 60 s): opening and migrating the store. */
  startTimeoutMs?: number
  /** Tests only: failures injected around the real connection. */
  faults?: FaultOptions
}

export interface CostPipelineStats {
  /** Events accepted by emit(). */
  emitted: number
  /** Events lost, all causes (the fields below). Never silent: each cause is also logged. */
  dropped: number
  droppedRingFull: number
  droppedSpoolFull: number
  droppedAfterClose: number
  droppedInvalid: number
  /** Events in the ring, not yet taken by the sink. */
  ringDepth: number
  ringCapacity: number
  /** Events (rows) acknowledged by ClickHouse; capacity rows included. */
  inserted: number
  insertedBatches: number
  /** Batches on disk waiting for ClickHouse (replayed ones included). */
  spooledBatches: number
  spooledRows: number
  spooledBytes: number
  /** Failed insert attempts (every retry counts). */
  insertFailures: number
  /** Batches found in the spool at start and replayed. */
  replayedBatches: number
  replayedRows: number
  /** Batches ClickHouse refused for good, parked in <spool>/dead. */
  deadLetterBatches: number
  deadLetterRows: number
  /** Events whose event_id was not a UUID (given a fresh UUIDv7). */
  invalidEventIds: number
  /** Events in half-written spool files found at start (the process died mid-write). */
  lostOnCrash: number
  schemaVersion: number
  /** Duration of the last successful insert, ms. */
  lastInsertMs: number
  sinkAlive: boolean
}

/**
 * Embedded: 30 s, since every read of an embedded store goes through
 * query(), which inserts what is pending first. A server: 3 s, since its
 * other readers (dashboards, clickhouse-client) see only what was inserted.
 */
export function defaultInsertMs (backend: CostBackendConfig): number {
  return backend.kind === 'embedded' ? 30_000 : 3_000
}
const DROP_WARN_MS = 10_000

// libchdb binds one data directory per process, and a spool has one owner.
const liveSpools = new Set<string>()
let liveDataDir: string | null = null

/**
 * Loads chdb's native addon on this thread too — without opening any
 * session, so ClickHouse is still driven by the sink thread alone. Reason:
 * when the only thread that loaded the addon exits, Node unloads it, and
 * libchdb's thread-local destructors then run into unmapped code (SIGSEGV
 * at sink-thread exit, observed with chdb 3.4). One reference from the main
 * thread keeps the library mapped for the life of the process.
 */
function pinLibchdb (): void {
  createRequire(import.meta.url)('chdb')
}

/** The sink thread's entry: the sibling module, compiled (.js) or under a TS loader (.ts, tests). */
function sinkWorkerUrl (): URL {
  const ext = fileURLToPath(import.meta.url).endsWith('.ts') ? '.ts' : '.js'
  return new URL(`./cost-sink-worker${ext}`, import.meta.url)
}

function positive (name: string, v: number | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt
  if (!Number.isFinite(v) || v < min) throw new CostError('FW_ERR_COST_OPTIONS_INVALID', `${name} must be a number >= ${min}, got ${String(v)}`)
  return v
}

interface Pending {
  resolve: (v: unknown) => void
  reject: (e: unknown) => void
  timer: NodeJS.Timeout | null
}

export class CostPipeline {
  readonly spoolDir: string
  readonly nodeId: string
  private readonly ring: EventRing
  private readonly counters: Counters
  private readonly log: (msg: string) => void
  private readonly requests = new Map<number, Pending>()
  /** Ends the open flush period (see startPeriod); armed by an emit while none is open. */
  private periodTimer: NodeJS.Timeout | null = null
  private readonly flushMs: number
  private readonly dataDir: string | null
  private readyResolve: () => void = () => {}
  private readyReject: (e: unknown) => void = () => {}
  private readonly ready: Promise<void>
  private nextId = 1
  private closed = false
  private closing: Promise<void> | null = null
  private alive = true
  private emitted = 0
  private droppedRing = 0
  private droppedClosed = 0
  private droppedInvalid = 0
  private lastDropWarn = 0
  private dropsSinceWarn = 0

  private constructor (private readonly worker: Worker, spoolDir: string, dataDir: string | null, ringCapacity: number, nodeId: string, counters: SharedArrayBuffer, log: (msg: string) => void, flushMs: number) {
    this.spoolDir = spoolDir
    this.flushMs = flushMs
    this.dataDir = dataDir
    this.nodeId = nodeId
    this.log = log
    this.counters = new Counters(counters)
    this.ring = new EventRing(ringCapacity, (msg: PageMessage) => { this.worker.postMessage(msg, [msg.buf]) })
    this.ready = new Promise<void>((resolve, reject) => { this.readyResolve = resolve; this.readyReject = reject })
    this.ready.catch(() => {})
    worker.on('message', (m: FromSink) => { this.onMessage(m) })
    worker.on('error', (err: unknown) => { this.gone(errorText(err)) })
    worker.on('exit', (code: number) => { this.gone(`exited with code ${code}`) })
  }

  // Flush periods: the first emit while none is open starts one, and
  // flushMs later the open page goes to the sink marked `cut` (or, if it is
  // empty, a bare cut message), so the sink spools every event of the period
  // at once: what a crash can lose is bounded by flushMs from emit. Between
  // those deadlines only full pages (1,024 events) travel. A hand-over on a
  // fixed short timer would buy nothing: the former 50 ms hand-over took
  // ~2.7 ms of sink CPU per second more, 1.3 µs per event at 2,000 events/s
  // (measured, perf/RESULTS.md), i.e. ~150 µs per page message (wake-up,
  // message, return of the page) for the ~18 a second it sent in excess (a
  // count by arithmetic, not measured). Only while events
  // flow: an idle process gets no wake-ups from the ring. One Timeout per
  // period, not per event.
  private startPeriod (): void {
    const timer = setTimeout(() => {
      this.periodTimer = null
      if (!this.ring.flushPage(true)) this.worker.postMessage({ t: 'cut' } satisfies ToSink)
    }, this.flushMs)
    timer.unref()
    this.periodTimer = timer
  }

  /**
   * Starts the sink thread: locks the spool, opens the store (embedded:
   * creates the data directory and applies migrations; HTTP: migrations are
   * retried in the background while the server is unreachable) and queues
   * any spooled batches for replay. Resolves when events can be emitted.
   */
  static async start (opts: CostPipelineOptions): Promise<CostPipeline> {
    if (opts === null || typeof opts !== 'object') throw new CostError('FW_ERR_COST_OPTIONS_INVALID', 'options object required')
    if (typeof opts.spoolDir !== 'string' || opts.spoolDir === '') throw new CostError('FW_ERR_COST_OPTIONS_INVALID', 'spoolDir is required')
    const b = opts.backend
    let backend: CostBackendConfig
    if (b?.kind === 'embedded' && typeof b.dataDir === 'string' && b.dataDir !== '') backend = { kind: 'embedded', dataDir: resolve(b.dataDir) }
    else if (b?.kind === 'http' && typeof b.url === 'string' && b.url !== '') backend = { ...b }
    else throw new CostError('FW_ERR_COST_OPTIONS_INVALID', "backend must be { kind: 'embedded', dataDir } or { kind: 'http', url }")
    const spoolDir = resolve(opts.spoolDir)
    const init: SinkInit = {
      backend,
      spoolDir,
      batchRows: positive('batchRows', opts.batchRows, 250_000),
      flushMs: positive('flushMs', opts.flushMs, 1_000),
      insertMs: positive('insertMs', opts.insertMs, defaultInsertMs(backend), 0),
      spoolMaxBytes: positive('spoolMaxBytes', opts.spoolMaxBytes, 1024 ** 3, 0),
      retryBaseMs: positive('retryBaseMs', opts.retryBaseMs, 250),
      retryMaxMs: positive('retryMaxMs', opts.retryMaxMs, 30_000),
      faults: { ...opts.faults },
      counters: Counters.buffer(),
    }
    const ringCapacity = positive('ringCapacity', opts.ringCapacity, 65_536, 16)
    const startTimeoutMs = positive('startTimeoutMs', opts.startTimeoutMs, 60_000)
    const log = opts.log ?? ((msg: string) => { console.error(`fairway: ${msg}`) })
    const nodeId = opts.nodeId ?? hostname()

    if (liveSpools.has(spoolDir)) throw new CostError('FW_ERR_COST_SPOOL_LOCKED', spoolDir, 'another running cost pipeline of this process')
    const dataDir = backend.kind === 'embedded' ? backend.dataDir : null
    if (dataDir !== null && liveDataDir !== null) {
      throw new CostError('FW_ERR_COST_BACKEND_LOCKED', dataDir, `this process already runs an embedded cost store on ${liveDataDir}; libchdb binds one data directory per process`)
    }
    if (dataDir !== null) pinLibchdb()
    liveSpools.add(spoolDir)
    if (dataDir !== null) liveDataDir = dataDir

    const worker = new Worker(sinkWorkerUrl(), { workerData: init, name: 'fairway-cost-sink' })
    const p = new CostPipeline(worker, spoolDir, dataDir, ringCapacity, nodeId, init.counters, log, init.flushMs)
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([p.ready, new Promise((_resolve, reject) => {
        timer = setTimeout(() => { reject(new CostError('FW_ERR_COST_TIMEOUT', 'start', startTimeoutMs)) }, startTimeoutMs)
      })])
    } catch (err) {
      p.closed = true
      await p.stopWorker()
      p.release()
      throw err
    } finally {
      clearTimeout(timer)
    }
    return p
  }

  /**
   * Request path. Copies the event into the ring and returns; never blocks,
   * never throws. When the ring is full (the sink is behind or stopped) the
   * event is dropped, counted, and a warning is logged (at most every 10 s).
   */
  emit (e: CostEvent): void {
    try {
      if (this.closed) { this.droppedClosed++; this.noteDrop(); return }
      if (this.ring.push(e, this.nodeId)) {
        this.emitted++
        if (this.periodTimer === null) this.startPeriod()
        return
      }
      this.droppedRing++
      this.noteDrop()
    } catch {
      this.droppedInvalid++
      this.noteDrop()
    }
  }

  /** Resolves when every event emitted so far is acknowledged by ClickHouse (or counted as dropped). */
  async flush (opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closed) throw new CostError('FW_ERR_COST_CLOSED')
    this.ring.flushPage()
    await this.request((id) => ({ t: 'flush', id }), 'flush', opts.timeoutMs)
  }

  /**
   * Runs SQL on the cost store (on the sink thread) and returns the result
   * text in `format`. Fresh by default: every event emitted before the call
   * is inserted first (however long insertMs is), so a query reads its own
   * writes; if the store does not take them within 10 s the query runs on
   * what it has. `fresh: false` reads the store as it is.
   */
  async query (sql: string, format: QueryFormat = 'JSONEachRow', opts: { readonly?: boolean, fresh?: boolean, params?: Record<string, unknown>, timeoutMs?: number } = {}): Promise<string> {
    if (this.closed) throw new CostError('FW_ERR_COST_CLOSED')
    const fresh = opts.fresh !== false
    if (fresh) this.ring.flushPage() // posted before the query, so the sink has it when the query arrives
    return await this.request<string>((id) => ({
      t: 'query', id, sql, format, readonly: opts.readonly === true, fresh, ...(opts.params === undefined ? {} : { params: opts.params }),
    }), 'query', opts.timeoutMs)
  }

  /** Spools capacity records (durable when this resolves); they reach ClickHouse like event batches. */
  async recordCapacity (records: readonly CapacityRecord[]): Promise<void> {
    if (this.closed) throw new CostError('FW_ERR_COST_CLOSED')
    if (records.length === 0) return
    const data = encodeCapacity(records, this.nodeId)
    await this.request((id) => ({ t: 'capacity', id, data, rows: records.length }), 'recordCapacity')
  }

  stats (): CostPipelineStats {
    const c = this.counters
    const droppedSpoolFull = c.get(C.DROPPED_SPOOL_ROWS)
    return {
      emitted: this.emitted,
      dropped: this.droppedRing + droppedSpoolFull + this.droppedClosed + this.droppedInvalid,
      droppedRingFull: this.droppedRing,
      droppedSpoolFull,
      droppedAfterClose: this.droppedClosed,
      droppedInvalid: this.droppedInvalid,
      ringDepth: this.ring.depth,
      ringCapacity: this.ring.capacity,
      inserted: c.get(C.INSERTED_ROWS),
      insertedBatches: c.get(C.INSERTED_BATCHES),
      spooledBatches: c.get(C.SPOOLED_BATCHES),
      spooledRows: c.get(C.SPOOLED_ROWS),
      spooledBytes: c.get(C.SPOOLED_BYTES),
      insertFailures: c.get(C.INSERT_FAILURES),
      replayedBatches: c.get(C.REPLAYED_BATCHES),
      replayedRows: c.get(C.REPLAYED_ROWS),
      deadLetterBatches: c.get(C.DEAD_LETTER_BATCHES),
      deadLetterRows: c.get(C.DEAD_LETTER_ROWS),
      invalidEventIds: c.get(C.INVALID_IDS),
      lostOnCrash: c.get(C.LOST_ROWS),
      schemaVersion: c.get(C.SCHEMA_VERSION),
      lastInsertMs: c.get(C.LAST_INSERT_US) / 1000,
      sinkAlive: this.alive,
    }
  }

  /**
   * Stops accepting events, hands the ring to the sink, waits up to
   * timeoutMs (default 30 s) for ClickHouse to acknowledge everything, then
   * stops the sink thread. What ClickHouse did not take stays in the spool
   * (logged) for the next start or `fairway cost replay`. Idempotent; never
   * rejects (a failure is logged).
   */
  close (opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closing !== null) return this.closing
    this.closed = true
    if (this.periodTimer !== null) { clearTimeout(this.periodTimer); this.periodTimer = null }
    this.closing = (async () => {
      if (!this.alive) { this.release(); return }
      this.ring.flushPage()
      const timeoutMs = opts.timeoutMs ?? 30_000
      try {
        const r = await this.request<CloseResult>((id) => ({ t: 'close', id, timeoutMs }), 'close', timeoutMs + 30_000)
        if (r.remainingBatches > 0) {
          this.log(`cost: closing with ${r.remainingBatches} batches (${r.remainingRows} events) still in ${this.spoolDir}: ClickHouse did not take them within ${timeoutMs} ms; they are inserted at the next start, or now with: fairway cost replay --spool ${this.spoolDir}`)
        }
      } catch (err) {
        // Shutdown must go on; what was spooled stays spooled.
        this.log(`cost: close did not complete cleanly (${errorText(err)}); spooled batches stay in ${this.spoolDir} for the next start`)
      } finally {
        await this.stopWorker()
        this.release()
      }
    })()
    return this.closing
  }

  // The sink thread ends by itself once it has closed the store (its port is
  // unref'd on close); terminate() is the last resort for one that does not,
  // since it can cut an embedded ClickHouse call short.
  private async stopWorker (): Promise<void> {
    if (!this.alive) return
    const exited = new Promise<void>((resolve) => { this.worker.once('exit', () => { resolve() }) })
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<boolean>((resolve) => { timer = setTimeout(() => { resolve(true) }, 10_000) })
    if (await Promise.race([exited.then(() => false), late])) await this.worker.terminate()
    clearTimeout(timer)
  }

  private release (): void {
    liveSpools.delete(this.spoolDir)
    if (this.dataDir !== null && liveDataDir === this.dataDir) liveDataDir = null
  }

  private request<T> (make: (id: number) => ToSink, what: string, timeoutMs?: number): Promise<T> {
    if (!this.alive) return Promise.reject(new CostError('FW_ERR_COST_SINK_CRASHED', 'not running'))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = timeoutMs === undefined
        ? null
        : setTimeout(() => { this.requests.delete(id); reject(new CostError('FW_ERR_COST_TIMEOUT', what, timeoutMs)) }, timeoutMs)
      this.requests.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      this.worker.postMessage(make(id))
    })
  }

  private onMessage (m: FromSink): void {
    switch (m.t) {
      case 'page': this.ring.release(m.buf, m.n); return
      case 'reply': {
        const r = this.requests.get(m.id)
        if (r === undefined) return
        this.requests.delete(m.id)
        if (r.timer !== null) clearTimeout(r.timer)
        if (m.ok) r.resolve(m.value)
        else r.reject(CostError.revive(m.code, m.message))
        return
      }
      case 'log': this.log(m.msg); return
      case 'ready': this.readyResolve(); return
      case 'fatal': this.readyReject(CostError.revive(m.code, m.message))
    }
  }

  private gone (why: string): void {
    if (!this.alive) return
    this.alive = false
    const err = new CostError('FW_ERR_COST_SINK_CRASHED', why)
    this.readyReject(err)
    for (const r of this.requests.values()) {
      if (r.timer !== null) clearTimeout(r.timer)
      r.reject(err)
    }
    this.requests.clear()
    if (!this.closed) {
      this.log(`cost: the cost sink thread stopped (${why}): new cost events are dropped and counted; spooled batches are replayed at the next start`)
      this.release()
    }
  }

  private noteDrop (): void {
    this.dropsSinceWarn++
    const now = Date.now()
    if (now - this.lastDropWarn < DROP_WARN_MS) return
    this.lastDropWarn = now
    this.log(`cost: DROPPING cost events: ${this.dropsSinceWarn} since the last warning (totals: ring full ${this.droppedRing}, after close ${this.droppedClosed}, invalid ${this.droppedInvalid}; ring ${this.ring.depth}/${this.ring.capacity}, sink ${this.alive ? 'running' : 'stopped'})`)
    this.dropsSinceWarn = 0
  }
}
