// The cost sink: runs on its own worker thread and is the only code that
// touches ClickHouse. It gathers ring pages into a Native block, cuts batches by size
// (batchRows) or age (flushMs), writes each batch to the spool (fsync)
// BEFORE offering it to ClickHouse, inserts in order with the batch id as
// deduplication token, and deletes a spool file only after ClickHouse
// acknowledged it. Spooled batches wait up to insertMs and then go in
// together, as one insert of a group (spool.ts): durability stays at
// flushMs while ClickHouse sees a few large inserts instead of one small
// one per second — an insert's fixed cost here (~40 ms of CPU: the
// statement and its two materialized views planned, a part per table,
// later merges) is what dominated the sink's CPU at batch-1 request rates.
// Failures are retried with exponential backoff and jitter, forever: the
// spool cap, not a retry limit, bounds what a long outage costs, and every
// event it cannot keep is counted and logged.
//
// Flow control: when batches pile up in memory faster than the disk takes
// them (MAX_SPOOL_BACKLOG), the sink stops taking pages; the ring on the
// gateway thread then fills and counts drops there.

import { basename } from 'node:path'
import { CostError, errorText } from './cost-error.js'
import { ClickHouseBackend, isPermanentInsertError } from './clickhouse-backend.js'
import { backoffDelay, Sleeper } from './backoff.js'
import type { PageMessage } from './event-page.js'
import { NativeBatchEncoder } from './native-batch.js'
import { CAPACITY_COLUMNS } from './schema.js'
import { C, Counters, type CloseResult, type CutMessage, type FromSink, type SinkInit, type ToSink } from './sink-protocol.js'
import { Spool, type SpoolEntry, type SpoolFormat, type SpoolGroup } from './spool.js'
import { uuidv7 } from './uuidv7.js'

const MAX_SPOOL_BACKLOG = 4
/** How long a fresh query waits for the events emitted before it to go in (then it runs on what the store has). */
const FRESH_WAIT_MS = 10_000
const WARN_EVERY_MS = 10_000
const CAPACITY_HEADER = CAPACITY_COLUMNS.join('\t') + '\n'

interface Queued {
  readonly entry: SpoolEntry
  readonly seq: number
  /** Date.now() when it was spooled (0: replayed, due at once). */
  readonly at: number
  /** The manifest it is inserted under, once one is written (or found at start). */
  group: SpoolGroup | null
  /**
   * Inserted on its own, under its own id, for good: it was offered alone
   * once (that insert may have committed with its acknowledgement lost), or
   * replayed from outside any manifest (same reason, before the restart), or
   * its group was refused for good. Putting it in a group now could store
   * it twice.
   */
  solo: boolean
}

/** One insert: a lone batch, or the members of a group. */
interface Unit {
  readonly items: Queued[]
  readonly group: SpoolGroup | null
}

function rowsOf (items: readonly Queued[]): number {
  let n = 0
  for (const q of items) n += q.entry.rows
  return n
}

export class CostSink {
  private readonly c: Counters
  private backend: ClickHouseBackend | null = null
  private spool: Spool | null = null
  /** The cost_events batch being filled. */
  private readonly encoder = new NativeBatchEncoder()
  private lastBatchRows = 1024
  private cutTimer: NodeJS.Timeout | null = null
  /** Date.now() at the first event of the open batch's oldest page. */
  private batchOpenedAt = 0
  /** Sequence number of the last batch cut (replayed batches first). */
  private seq = 0
  /** Batches cut and not yet inserted, dropped or dead-lettered, in order. */
  private readonly pending: number[] = []
  /** Spooled batches waiting for ClickHouse, in order. */
  private readonly queue: Queued[] = []
  private spoolChain: Promise<unknown> = Promise.resolve()
  private backlog = 0
  /** Pages (and cut marks, in order) not taken while the spool is behind. */
  private readonly held: Array<PageMessage | CutMessage> = []
  private inserting = false
  /** Wakes the insert loop when the head batch has waited insertMs. */
  private dueTimer: NodeJS.Timeout | null = null
  private schemaReady = false
  private stopped = false
  private attempt = 0
  private readonly sleeper = new Sleeper()
  private readonly waiters: Array<{ upTo: number, resolve: () => void }> = []
  private inflight: Promise<unknown> | null = null
  private readonly warned = new Map<string, { at: number, suppressed: number }>()

  constructor (private readonly init: SinkInit, private readonly post: (m: FromSink, transfer?: ArrayBuffer[]) => void) {
    this.c = new Counters(init.counters)
  }

  /** Locks and scans the spool, opens the store (embedded: and migrates it), queues the replay. */
  async start (): Promise<void> {
    const spool = await Spool.open(this.init.spoolDir)
    this.spool = spool
    try {
      this.backend = ClickHouseBackend.open(this.init.backend, this.init.faults)
      // Embedded: a schema that cannot be created is a broken install; fail
      // start. HTTP: the server may be down now; the insert loop retries.
      if (this.backend.kind === 'embedded') {
        this.c.set(C.SCHEMA_VERSION, await this.backend.migrate())
        this.schemaReady = true
      }
    } catch (err) {
      await this.backend?.close().catch(() => {})
      await spool.close()
      throw err
    }
    if (spool.lostRows > 0) {
      this.c.add(C.LOST_ROWS, spool.lostRows)
      this.log(`cost: LOST ${spool.lostRows} events: half-written spool files in ${spool.dir} (the process died while writing them; they never reached ClickHouse)`)
    }
    const groupOf = new Map<string, SpoolGroup>()
    for (const g of spool.groups) for (const name of g.members) groupOf.set(name, g)
    for (const entry of spool.found) {
      const seq = ++this.seq
      this.pending.push(seq)
      const group = groupOf.get(basename(entry.path)) ?? null
      this.queue.push({ entry, seq, at: 0, group, solo: group === null })
      this.c.add(C.SPOOLED_BATCHES, 1)
      this.c.add(C.SPOOLED_ROWS, entry.rows)
      this.c.add(C.SPOOLED_BYTES, entry.bytes)
      this.c.add(C.REPLAYED_BATCHES, 1)
      this.c.add(C.REPLAYED_ROWS, entry.rows)
    }
    if (spool.found.length > 0) this.log(`cost: replaying ${spool.found.length} spooled batches from ${spool.dir}`)
    this.kick()
  }

  handle (m: ToSink): void {
    switch (m.t) {
      case 'page':
      case 'cut':
        if (this.held.length > 0 || this.backlog >= MAX_SPOOL_BACKLOG) this.held.push(m)
        else this.take(m)
        return
      case 'capacity':
        this.reply(m.id, this.batch('capacity_hours', 'tsv', [Buffer.from(CAPACITY_HEADER + m.data, 'utf8')], m.rows).then((ok) => {
          if (!ok) throw new CostError('FW_ERR_COST_SPOOL_IO', this.init.spoolDir, 'capacity records not spooled (spool full or unwritable)')
          return null
        }))
        return
      case 'flush':
        this.reply(m.id, this.flushAll().then(() => null))
        return
      case 'query': {
        const backend = this.backend
        if (backend === null || this.stopped) { this.reply(m.id, Promise.reject(new CostError('FW_ERR_COST_CLOSED'))); return }
        const run = (): Promise<string> => backend.query(m.sql, m.format, { readonly: m.readonly, ...(m.params === undefined ? {} : { params: m.params }) })
        this.reply(m.id, m.fresh ? this.flushWithin(FRESH_WAIT_MS).then(run) : run())
        return
      }
      case 'close':
        this.reply(m.id, this.close(m.timeoutMs))
    }
  }

  private reply (id: number, p: Promise<unknown>): void {
    p.then(
      (value) => { this.post({ t: 'reply', id, ok: true, value }) },
      (err: unknown) => { this.post({ t: 'reply', id, ok: false, code: err instanceof CostError ? err.code : 'FW_ERR_COST_BACKEND_UNAVAILABLE', message: errorText(err) }) },
    )
  }

  private takePage (m: PageMessage): void {
    // A new batch is sized like the previous one (+10%): no regrowth under
    // steady load, little memory when quiet.
    if (this.encoder.rows === 0 || m.openedAt < this.batchOpenedAt) this.batchOpenedAt = m.openedAt
    this.encoder.add(m, Math.ceil(this.lastBatchRows * 1.1))
    this.c.set(C.INVALID_IDS, this.encoder.invalidIds)
    this.c.add(C.RECEIVED_ROWS, m.n)
    this.post({ t: 'page', buf: m.buf, n: m.n }, [m.buf])
    // The ring marks the last page of each flush period; the timer is a
    // backstop for a gateway thread too busy to send it on time (a quarter
    // of flushMs late: on time, the marked page always comes first).
    if (this.encoder.rows >= this.init.batchRows || m.cut) this.cut()
    else if (this.cutTimer === null) {
      this.cutTimer = setTimeout(() => { this.cutTimer = null; this.cut() }, this.batchOpenedAt + this.init.flushMs * 1.25 - Date.now())
    }
  }

  private take (m: PageMessage | CutMessage): void {
    if (m.t === 'page') this.takePage(m)
    else this.cut()
  }

  private drainHeld (force: boolean): void {
    while (this.held.length > 0 && (force || this.backlog < MAX_SPOOL_BACKLOG)) this.take(this.held.shift() as PageMessage | CutMessage)
  }

  private cut (): void {
    if (this.cutTimer !== null) { clearTimeout(this.cutTimer); this.cutTimer = null }
    const rows = this.encoder.rows
    if (rows === 0) return
    this.lastBatchRows = rows
    void this.batch('cost_events', 'native', this.encoder.finish(), rows)
  }

  /** Queues a batch for the spool; resolves true once it is on disk, false if it was dropped. */
  private batch (table: string, format: SpoolFormat, chunks: Buffer[], rows: number): Promise<boolean> {
    const seq = ++this.seq
    this.pending.push(seq)
    this.backlog++
    const p = this.spoolChain.then(() => this.spoolOne(seq, table, format, chunks, rows))
    this.spoolChain = p.catch(() => {})
    return p
  }

  private async spoolOne (seq: number, table: string, format: SpoolFormat, chunks: Buffer[], rows: number): Promise<boolean> {
    const spool = this.spool as Spool
    try {
      if (this.c.get(C.SPOOLED_BYTES) + chunks.reduce((sum, b) => sum + b.length, 0) > this.init.spoolMaxBytes) {
        this.drop(seq, rows, 'spool-full', `spool ${spool.dir} is at its cap of ${this.init.spoolMaxBytes} bytes with ${this.queue.length} batches waiting for ClickHouse`)
        return false
      }
      let entry: SpoolEntry
      try {
        entry = await spool.write(uuidv7(), table, rows, format, chunks)
      } catch (err) {
        this.drop(seq, rows, 'spool-io', `cannot write the spool: ${errorText(err)}`)
        return false
      }
      this.c.add(C.SPOOLED_BATCHES, 1)
      this.c.add(C.SPOOLED_ROWS, rows)
      this.c.add(C.SPOOLED_BYTES, entry.bytes)
      this.queue.push({ entry, seq, at: Date.now(), group: null, solo: false })
      this.kick()
      return true
    } finally {
      this.backlog--
      this.drainHeld(false)
    }
  }

  private drop (seq: number, rows: number, key: string, why: string): void {
    this.c.add(C.DROPPED_SPOOL_ROWS, rows)
    this.warn(key, `cost: DROPPING ${rows} cost events: ${why} (${this.c.get(C.DROPPED_SPOOL_ROWS)} dropped so far)`)
    this.complete(seq)
  }

  private kick (): void {
    if (!this.inserting && !this.stopped) void this.insertLoop()
  }

  private async insertLoop (): Promise<void> {
    this.inserting = true
    try {
      while (!this.stopped) {
        const backend = this.backend as ClickHouseBackend
        if (!this.schemaReady) {
          try {
            this.c.set(C.SCHEMA_VERSION, await backend.migrate())
            this.schemaReady = true
            this.recovered('creating the cost schema')
          } catch (err) {
            await this.retryLater('schema', 'cannot create the cost schema', err)
          }
          continue
        }
        const unit = await this.nextUnit()
        if (unit === null) break
        const head = unit.items[0] as Queued
        const what = unit.group === null
          ? `batch ${head.entry.id} (${head.entry.rows} ${head.entry.table} rows)`
          : `group ${unit.group.token} (${unit.items.length} batches, ${rowsOf(unit.items)} ${head.entry.table} rows)`
        const t0 = performance.now()
        try {
          this.inflight = backend.insert(unit.items.map((q) => q.entry), unit.group?.token ?? head.entry.id)
          await this.inflight
        } catch (err) {
          this.c.add(C.INSERT_FAILURES, 1)
          if (isPermanentInsertError(err) && unit.group !== null) await this.ungroup(unit, err)
          else if (isPermanentInsertError(err)) await this.deadLetter(head, err)
          else await this.retryLater('insert', `insert of ${what} failed`, err)
          continue
        } finally {
          this.inflight = null
        }
        this.c.set(C.LAST_INSERT_US, Math.round((performance.now() - t0) * 1000))
        this.recovered('inserting')
        if (this.init.faults.crashAfterInsertBeforeUnspool === true) {
          // Test fault: die like kill -9 between the acknowledgement and the unspool.
          process.kill(process.pid, 'SIGKILL')
          await new Promise(() => {})
        }
        const spool = this.spool as Spool
        try {
          if (unit.group === null) await spool.remove(head.entry)
          else await spool.removeGroup(unit.group, unit.items.map((q) => q.entry))
        } catch (err) {
          this.warn('unspool', `cost: cannot remove the spool files of ${what} (${errorText(err)}); they are inserted again at the next start and deduplicated`)
        }
        for (const q of unit.items) this.settle(q)
        this.c.add(C.INSERTED_ROWS, rowsOf(unit.items))
        this.c.add(C.INSERTED_BATCHES, unit.items.length)
      }
    } finally {
      this.inserting = false
    }
  }

  /**
   * The next insert, or null when there is none yet. A group found at start
   * goes in as it was. Otherwise the head and the Native batches of its
   * table right behind it (up to batchRows rows) go together, once the head
   * has waited insertMs, the run is full or cannot grow, or a flush or close
   * is waiting; a run of two or more gets its manifest written first. A
   * batch's first attempt fixes its unit: a lone batch stays alone, a
   * group's members stay in that group, through every retry.
   */
  private async nextUnit (): Promise<Unit | null> {
    const head = this.queue[0]
    if (head === undefined) return null
    if (head.group !== null) {
      const g = head.group
      return { items: this.queue.filter((q) => q.group === g), group: g }
    }
    const groupable = (q: Queued): boolean => q.group === null && !q.solo && q.entry.format === 'native' && q.entry.table === head.entry.table
    const items = [head]
    let rows = head.entry.rows
    let full = !groupable(head)
    for (let i = 1; !full && i < this.queue.length; i++) {
      const q = this.queue[i] as Queued
      if (!groupable(q) || rows + q.entry.rows > this.init.batchRows) { full = true; break }
      items.push(q)
      rows += q.entry.rows
    }
    const due = head.at + this.init.insertMs
    if (!full && rows < this.init.batchRows && this.waiters.length === 0 && Date.now() < due) {
      if (this.dueTimer === null) {
        this.dueTimer = setTimeout(() => { this.dueTimer = null; this.kick() }, due - Date.now())
      }
      return null
    }
    if (items.length === 1) { head.solo = true; return { items, group: null } }
    let g: SpoolGroup
    try {
      g = await (this.spool as Spool).writeGroup(items.map((q) => q.entry))
    } catch (err) {
      this.warn('group', `cost: cannot write a group manifest (${errorText(err)}); inserting batch ${head.entry.id} on its own`)
      head.solo = true
      return { items: [head], group: null }
    }
    for (const q of items) q.group = g
    return { items, group: g }
  }

  /** A group ClickHouse refused for good: its members go in one by one, so only a bad one is dead-lettered. */
  private async ungroup (unit: Unit, err: unknown): Promise<void> {
    const g = unit.group as SpoolGroup
    this.log(`cost: ClickHouse refused group ${g.token} (${unit.items.length} batches): ${errorText(err)}; inserting its batches one by one`)
    try {
      await (this.spool as Spool).dropGroup(g)
    } catch (e) {
      // Not one by one while the manifest is on disk: after a restart it
      // would re-form the group from the good members alone, which would
      // then go in again under the group's token. Retry the whole step.
      await this.retryLater('ungroup', `cannot remove the manifest ${g.path}`, e)
      return
    }
    for (const q of unit.items) { q.group = null; q.solo = true }
  }

  private settle (q: Queued): void {
    this.queue.shift()
    this.c.add(C.SPOOLED_BATCHES, -1)
    this.c.add(C.SPOOLED_ROWS, -q.entry.rows)
    this.c.add(C.SPOOLED_BYTES, -q.entry.bytes)
    this.complete(q.seq)
  }

  private async deadLetter (q: Queued, err: unknown): Promise<void> {
    try {
      await (this.spool as Spool).quarantine(q.entry)
    } catch (e) {
      this.log(`cost: cannot move ${q.entry.path} to dead/: ${errorText(e)}`)
    }
    this.c.add(C.DEAD_LETTER_BATCHES, 1)
    this.c.add(C.DEAD_LETTER_ROWS, q.entry.rows)
    this.log(`cost: ClickHouse REFUSED batch ${q.entry.id} (${q.entry.rows} ${q.entry.table} rows) for good: ${errorText(err)}; parked in ${this.init.spoolDir}/dead (retry with fairway cost replay --spool ${this.init.spoolDir}/dead)`)
    this.settle(q)
  }

  private async retryLater (key: string, what: string, err: unknown): Promise<void> {
    if (this.stopped) return
    this.attempt++
    const delay = Math.round(backoffDelay(this.attempt, this.init.retryBaseMs, this.init.retryMaxMs))
    this.warn(key, `cost: ${what}: ${errorText(err).trim()}; retry ${this.attempt} in ${delay} ms; ${this.queue.length} batches (${this.c.get(C.SPOOLED_ROWS)} events) safe in the spool`)
    await this.sleeper.sleep(delay)
  }

  private recovered (what: string): void {
    if (this.attempt === 0) return
    this.log(`cost: ClickHouse is back: ${what} succeeded after ${this.attempt} failed attempts`)
    this.attempt = 0
    this.warned.clear()
  }

  private complete (seq: number): void {
    const i = this.pending.indexOf(seq)
    if (i >= 0) this.pending.splice(i, 1)
    const low = this.pending[0] ?? Infinity
    for (let k = this.waiters.length - 1; k >= 0; k--) {
      const w = this.waiters[k] as { upTo: number, resolve: () => void }
      if (w.upTo < low) { this.waiters.splice(k, 1); w.resolve() }
    }
  }

  /** Resolves once every batch cut so far is inserted, dropped or dead-lettered. */
  private flushAll (): Promise<void> {
    this.drainHeld(true)
    this.cut()
    const upTo = this.seq
    if ((this.pending[0] ?? Infinity) > upTo) return Promise.resolve()
    const done = new Promise<void>((resolve) => { this.waiters.push({ upTo, resolve }) })
    this.kick() // batches already spooled and waiting out insertMs go now
    return done
  }

  /** flushAll(), waiting at most timeoutMs; true if it timed out. */
  private async flushWithin (timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timedOut = await Promise.race([
      this.flushAll().then(() => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => { resolve(true) }, timeoutMs) }),
    ])
    clearTimeout(timer)
    return timedOut
  }

  private async close (timeoutMs: number): Promise<CloseResult> {
    const timedOut = await this.flushWithin(timeoutMs)
    // Whatever was cut is on disk (or counted as dropped) before we stop.
    await this.spoolChain
    this.stopped = true
    if (this.dueTimer !== null) { clearTimeout(this.dueTimer); this.dueTimer = null }
    this.sleeper.interrupt()
    // Embedded: the backend serialises close behind an insert in flight.
    await this.backend?.close().catch(() => {})
    await this.spool?.close().catch(() => {})
    let remainingRows = 0
    for (const q of this.queue) remainingRows += q.entry.rows
    return { remainingBatches: this.queue.length, remainingRows, timedOut }
  }

  private log (msg: string): void {
    this.post({ t: 'log', msg })
  }

  /** At most one message per key every WARN_EVERY_MS, with a count of the ones held back. */
  private warn (key: string, msg: string): void {
    const now = Date.now()
    const w = this.warned.get(key)
    if (w !== undefined && now - w.at < WARN_EVERY_MS) { w.suppressed++; return }
    this.log(w !== undefined && w.suppressed > 0 ? `${msg} (+${w.suppressed} similar in the last ${Math.round((now - w.at) / 1000)} s)` : msg)
    this.warned.set(key, { at: now, suppressed: 0 })
  }
}
