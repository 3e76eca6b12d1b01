// The durable half of at-least-once: every batch is a file in the spool
// directory before it is offered to ClickHouse, and is deleted only after
// ClickHouse acknowledged it. A file is written as `<name>.tmp`, fsynced,
// renamed to its final name and the directory fsynced, so a final name
// always holds a complete batch; a `.tmp` found at start is a batch the
// process died writing (it never reached ClickHouse) and is counted as lost.
//
// File name: `<batch id>.<table>.<rows>.<format>` — the batch id is a
// UUIDv7, so names sort in the order batches were cut, and it is also the
// insert's deduplication token. Content, by extension: `.native` is one
// ClickHouse Native block (cost events: the exact bytes the insert sends;
// names and types of the columns lead the block), `.tsv` is
// TabSeparatedWithNames (capacity records, and event batches spooled by
// versions before the Native spool; both kinds replay).
//
// Cost per batch: one write + two fsyncs (~9 ms for 3 MB on this machine's
// ext4), amortised over batchRows events. Writes, fsyncs, renames and
// unlinks are synchronous: the spool is driven by the sink thread, which has
// nothing better to do while the disk works, and each async call was a
// round trip through libuv's pool (two thread wake-ups, ~8 per batch).
// Measured at 2,000 events/s (bench-cost-rate, 3 rounds): every thread but
// the emitter 7.5–8.0 → 7.0–7.5 µs per event.
//
// Groups: several consecutive Native batches of one table can go to
// ClickHouse as ONE insert (an insert's fixed cost — planning the insert and
// its materialized views, one part per table — is ~40 ms here, far more than
// a second's worth of rows at batch-1 rates). Before such an insert the sink
// writes a manifest, `<first member id>.group`, listing the members' file
// names (written and fsynced like a batch), and the insert's deduplication
// token is the manifest's. At start a manifest re-forms its group from the
// members still present, so a group acknowledged but not yet unspooled is
// offered again under the same token and deduplicated. After the
// acknowledgement the members are unlinked and the directory fsynced BEFORE
// the manifest goes: members that outlived their manifest would be replayed
// under their own ids and stored twice.

import { accessSync, closeSync, constants, existsSync, fsyncSync, openSync, renameSync, unlinkSync, writevSync } from 'node:fs'
import { hostname } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { CostError, errorText } from './cost-error.js'
import { readNativeColumns } from './native-format.js'

/** `native`: one ClickHouse Native block; `tsv`: TabSeparatedWithNames. */
export type SpoolFormat = 'native' | 'tsv'

export interface SpoolEntry {
  readonly id: string
  readonly table: string
  readonly rows: number
  readonly format: SpoolFormat
  readonly bytes: number
  readonly path: string
}

const GROUP = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.group$/
const NAME = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.([a-z_][a-z0-9_]*)\.(\d+)\.(native|tsv)$/
const LOCK = '.lock'
export const DEAD_DIR = 'dead'

/** The directory (or, if it is missing, its nearest existing parent) can be written by this process. */
export function writable (dir: string): boolean {
  let d = resolve(dir)
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d)
  try {
    accessSync(d, constants.W_OK)
    return true
  } catch {
    return false
  }
}

export function parseSpoolName (name: string): { id: string, table: string, rows: number, format: SpoolFormat } | null {
  const m = NAME.exec(name)
  if (m === null) return null
  return { id: m[1] as string, table: m[2] as string, rows: Number(m[3]), format: m[4] as SpoolFormat }
}

/** Batches in a spool directory, oldest first (no lock taken: for reports). */
export async function listSpool (dir: string): Promise<SpoolEntry[]> {
  let names: string[]
  try { names = await readdir(dir) } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw new CostError('FW_ERR_COST_SPOOL_IO', dir, errorText(err))
  }
  const out: SpoolEntry[] = []
  for (const name of names.sort()) {
    const p = parseSpoolName(name)
    if (p === null) continue
    const path = join(dir, name)
    const s = await stat(path).catch(() => null)
    if (s !== null && s.isFile()) out.push({ ...p, bytes: s.size, path })
  }
  return out
}

/** The column names a spool file holds, from its header (TSV: first line; Native: the block's column names). */
export async function readSpoolColumns (e: SpoolEntry): Promise<string[]> {
  if (e.format === 'native') return (await readNativeColumns(e.path)).map((c) => c.name)
  const path = e.path
  const fh = await open(path, 'r').catch((err: unknown) => { throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', path, errorText(err)) })
  try {
    const buf = Buffer.alloc(4096)
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0)
    const nl = buf.subarray(0, bytesRead).indexOf(10)
    if (nl <= 0) throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', path, 'no header line')
    return buf.subarray(0, nl).toString('utf8').split('\t')
  } finally {
    await fh.close()
  }
}

/** A group's deduplication token: never equal to a batch id, so a member's own insert can never collide with it. */
function groupToken (firstId: string): string {
  return `group-${firstId}`
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
}

/** A manifest: these batches (file names, in order) are inserted as one, with `token`. */
export interface SpoolGroup {
  readonly token: string
  readonly path: string
  readonly members: readonly string[]
}

export class Spool {
  /** Batches found at open, oldest first: the replay. */
  readonly found: SpoolEntry[]
  /** Manifests found at open whose members are (some of them) still here. */
  readonly groups: SpoolGroup[]
  /** Rows in half-written batches found at open (the process died mid-write). */
  readonly lostRows: number

  private constructor (readonly dir: string, found: SpoolEntry[], groups: SpoolGroup[], lostRows: number) {
    this.found = found
    this.groups = groups
    this.lostRows = lostRows
  }

  /**
   * Takes the directory's lock file (pid + host) and scans it. A lock held
   * by a live process, or by another host, is refused; a lock left by a dead
   * process (or by an earlier pipeline of this process — the main thread
   * allows one live pipeline per spool) is taken over.
   */
  static async open (dir: string): Promise<Spool> {
    try {
      await mkdir(join(dir, DEAD_DIR), { recursive: true })
    } catch (err) {
      // mkdir -p reports a read-only file system as ENOENT: say what is wrong.
      throw new CostError('FW_ERR_COST_SPOOL_IO', dir, writable(dir) ? errorText(err) : 'the directory is not writable by this process')
    }
    const lock = join(dir, LOCK)
    const me = `${process.pid}\n${hostname()}\n`
    try {
      await writeFile(lock, me, { flag: 'wx' })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new CostError('FW_ERR_COST_SPOOL_IO', dir, errorText(err))
      const [pidText, host] = (await readFile(lock, 'utf8').catch(() => '')).split('\n')
      const pid = Number(pidText)
      if (host !== undefined && host !== '' && host !== hostname()) throw new CostError('FW_ERR_COST_SPOOL_LOCKED', dir, `host ${host} (pid ${pidText ?? '?'}); remove ${lock} if that host is gone`)
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) throw new CostError('FW_ERR_COST_SPOOL_LOCKED', dir, `running process ${pid}`)
      await writeFile(lock, me)
    }
    let lostRows = 0
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.tmp')) continue
      lostRows += parseSpoolName(name.slice(0, -4))?.rows ?? 0
      await unlink(join(dir, name)).catch(() => {})
    }
    const found = await listSpool(dir)
    const present = new Set(found.map((e) => basename(e.path)))
    const groups: SpoolGroup[] = []
    for (const name of (await readdir(dir)).sort()) {
      const m = GROUP.exec(name)
      if (m === null) continue
      const path = join(dir, name)
      // Unreadable is not "empty": forgetting a manifest whose group went in
      // would replay its members under their own ids, twice stored.
      const text = await readFile(path, 'utf8').catch((err: unknown) => { throw new CostError('FW_ERR_COST_SPOOL_IO', dir, `cannot read the group manifest ${name}: ${errorText(err)}`) })
      const members = text.split('\n').filter((n) => n !== '')
      // Every member gone: the group was acknowledged and unspooled, only the manifest's own unlink was lost.
      if (!members.some((n) => present.has(n))) { await unlink(path).catch(() => {}); continue }
      groups.push({ token: groupToken(m[1] as string), path, members })
    }
    return new Spool(dir, found, groups, lostRows)
  }

  /** Writes the manifest of a group of batches (fsynced, then renamed into place) before their one insert. */
  async writeGroup (members: readonly SpoolEntry[]): Promise<SpoolGroup> {
    const first = members[0]
    if (first === undefined) throw new CostError('FW_ERR_COST_SPOOL_IO', this.dir, 'empty group')
    const names = members.map((e) => basename(e.path))
    const path = join(this.dir, `${first.id}.group`)
    await this.writeDurably(path, [Buffer.from(names.join('\n') + '\n', 'utf8')])
    return { token: groupToken(first.id), path, members: names }
  }

  /** After a group's insert was acknowledged: members first, made durable, then the manifest (see the header). */
  async removeGroup (g: SpoolGroup, members: readonly SpoolEntry[]): Promise<void> {
    for (const e of members) await this.remove(e)
    this.syncDir()
    await this.dropGroup(g)
  }

  /** Forgets a manifest (its members stay, to be inserted one by one). */
  async dropGroup (g: SpoolGroup): Promise<void> {
    unlinkIfThere(g.path)
    this.syncDir()
  }

  /** Writes the chunks, in order, as one batch file (writev: the chunks are not joined in memory). */
  async write (id: string, table: string, rows: number, format: SpoolFormat, chunks: readonly Buffer[]): Promise<SpoolEntry> {
    const path = join(this.dir, `${id}.${table}.${rows}.${format}`)
    const bytes = await this.writeDurably(path, chunks)
    return { id, table, rows, format, bytes, path }
  }

  /** `<path>.tmp`, written and fsynced, renamed to `path`, directory fsynced. Returns the bytes written. */
  private async writeDurably (path: string, chunks: readonly Buffer[]): Promise<number> {
    const tmp = path + '.tmp'
    let bytes = 0
    try {
      const fd = openSync(tmp, 'w')
      try {
        // writev takes at most IOV_MAX (1024) buffers per call.
        for (let i = 0; i < chunks.length; i += 1024) {
          const part = chunks.slice(i, i + 1024)
          const want = part.reduce((sum, b) => sum + b.length, 0)
          const written = writevSync(fd, part)
          if (written !== want) throw new Error(`short write (${written} of ${want} bytes)`)
          bytes += want
        }
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
      renameSync(tmp, path)
      this.syncDir()
    } catch (err) {
      try { unlinkSync(tmp) } catch {}
      throw new CostError('FW_ERR_COST_SPOOL_IO', this.dir, errorText(err))
    }
    return bytes
  }

  /** After the insert was acknowledged. No fsync: if the unlink is lost in a crash, the replay is deduplicated. */
  async remove (e: SpoolEntry): Promise<void> {
    unlinkIfThere(e.path)
  }

  /** Parks a batch ClickHouse refuses for good in `dead/`, where `fairway cost replay --spool DIR/dead` can retry it. */
  async quarantine (e: SpoolEntry): Promise<void> {
    await rename(e.path, join(this.dir, DEAD_DIR, basename(e.path))).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    })
  }

  async close (): Promise<void> {
    await rm(join(this.dir, LOCK), { force: true })
  }

  private syncDir (): void {
    const fd = openSync(this.dir, 'r')
    try { fsyncSync(fd) } finally { closeSync(fd) }
  }
}

function unlinkIfThere (path: string): void {
  try {
    unlinkSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}
