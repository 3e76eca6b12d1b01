// The cost store behind @clickhouse/client: embedded ClickHouse (chDB, via
// chdb/connection) by default, or a ClickHouse server over HTTP. One object
// per process and data directory; in the server it lives on the sink thread
// only (libchdb binds one data directory per process and must be driven from
// one thread).
//
// Embedded specifics this module absorbs:
//   - chdb/connection turns clickhouse_settings into `SET k = v; <query>` on
//     the one session, so settings outlive the statement. Every batch insert
//     therefore sets all of its settings explicitly, readonly is applied as a
//     query-level SETTINGS clause (a session-wide readonly=1 could never be
//     lifted), and all operations are serialised so two statements' settings
//     never interleave.
//   - a batch is inserted with INSERT … SELECT FROM file(<spool file>): the
//     engine reads the spool file itself and no row passes through JS again
//     (≈2.5× the rows/s of an inline INSERT body, measured).
// Over HTTP the spool file is streamed as the insert body (`FORMAT Native`
// or TabSeparatedWithNames, by the file's extension).

import { createReadStream, mkdirSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings } from '@clickhouse/client'
import { Session } from 'chdb'
import { createChdbConnection } from 'chdb/connection'
import { CostError, errorText } from './cost-error.js'
import { FaultyConnection, type FaultOptions } from './fault-injector.js'
import { MIGRATIONS, TABLE_COLUMNS, migrationsTable, quoteIdent, quoteLiteral, type MigrationStatement } from './schema.js'
import { readSpoolColumns, writable, type SpoolEntry } from './spool.js'

export type CostBackendConfig =
  | { kind: 'embedded', dataDir: string }
  | { kind: 'http', url: string, username?: string, password?: string, database?: string, requestTimeoutMs?: number }

export const QUERY_FORMATS = ['JSONEachRow', 'TabSeparatedWithNames', 'CSVWithNames', 'PrettyCompact'] as const
export type QueryFormat = typeof QUERY_FORMATS[number]

export interface QueryOptions {
  /** Run with ClickHouse readonly=1; the SQL must be one statement. */
  readonly?: boolean
  /** Values for {name:Type} placeholders, bound server-side. */
  params?: Record<string, unknown>
}

// ClickHouse error codes that mean "this batch will never insert" (its data
// or the schema is wrong), as opposed to "the store is not reachable now".
const PERMANENT = new Set([
  6, // CANNOT_PARSE_TEXT
  8, // THERE_IS_NO_COLUMN
  10, // NOT_FOUND_COLUMN_IN_BLOCK
  16, // NO_SUCH_COLUMN_IN_TABLE
  20, // NUMBER_OF_COLUMNS_DOESNT_MATCH
  26, // CANNOT_PARSE_QUOTED_STRING
  27, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  32, // ATTEMPT_TO_READ_AFTER_EOF
  33, // CANNOT_READ_ALL_DATA
  38, // CANNOT_PARSE_DATE
  41, // CANNOT_PARSE_DATETIME
  53, // TYPE_MISMATCH
  69, // ARGUMENT_OUT_OF_BOUND
  70, // CANNOT_CONVERT_TYPE
  72, // CANNOT_PARSE_NUMBER
  117, // INCORRECT_DATA
  321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
  349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
  376, // CANNOT_PARSE_UUID
  407, // DECIMAL_OVERFLOW
  467, // CANNOT_PARSE_BOOL
])

/** True when retrying the same batch cannot succeed: the sink parks it in spool/dead. */
export function isPermanentInsertError (err: unknown): boolean {
  if (err instanceof CostError) return err.code === 'FW_ERR_COST_SPOOL_CORRUPT'
  const e = err as { code?: unknown, type?: unknown } | null
  if (e === null || typeof e !== 'object' || typeof e.type !== 'string' || typeof e.code !== 'string') return false
  return PERMANENT.has(Number(e.code)) || e.type.startsWith('CANNOT_PARSE')
}

/**
 * Makes a canonical single statement (from formatQuerySingleLine) run with
 * readonly=1: appended to its trailing SETTINGS list if it has one, else as a
 * new SETTINGS clause. ClickHouse does not check a subquery's own SETTINGS
 * against a query-level readonly (measured: `SELECT * FROM (SELECT … FROM
 * file(…) SETTINGS readonly = 0) SETTINGS readonly = 1` reads the file), so a
 * statement with any SETTINGS clause other than the trailing one, or that
 * names `readonly` or `profile` at all, is refused. Anything this misjudges
 * becomes a refusal or a syntax error, never a query without readonly.
 */
export function readonlySql (canonical: string): string {
  // `INTO OUTFILE` is carried out by the client, not the server, so
  // readonly = 1 does not stop it: embedded chDB wrote the file (a review
  // found it), so it is refused wherever the words appear, string literals
  // included: a misjudgement is a refusal, never a write. A `FORMAT` clause
  // would override the format the caller asked for (the HTTP reply's
  // content-type follows the asked one); it is looked for outside string
  // literals only, since getting that wrong writes nothing.
  // Only reading statements: anything else (SET, INSERT, DDL) would fail on
  // readonly or, with SETTINGS appended, as a syntax error pointing into
  // text the caller never wrote.
  if (!/^(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b|^\(/i.test(canonical)) throw new CostError('FW_ERR_COST_QUERY_NOT_READONLY', 'a read-only query is one SELECT, WITH … SELECT, SHOW, DESCRIBE, EXPLAIN or EXISTS statement')
  if (/\bINTO\s+OUTFILE\b/i.test(canonical)) throw new CostError('FW_ERR_COST_QUERY_NOT_READONLY', 'INTO OUTFILE is not allowed in a read-only query')
  if (/\bFORMAT\s+[A-Za-z]/.test(canonical.replace(/'(?:[^'\\]|\\.)*'/g, "''"))) throw new CostError('FW_ERR_COST_QUERY_NOT_READONLY', 'a FORMAT clause is not allowed: ask for the format instead (Accept header, --format)')
  const trailing = /\sSETTINGS\s[^()'`"]*$/.test(canonical)
  const clauses = canonical.match(/\bSETTINGS\b/g)?.length ?? 0
  if (clauses > (trailing ? 1 : 0) || /\b(readonly|profile)\b/i.test(canonical)) {
    throw new CostError('FW_ERR_COST_QUERY_NOT_READONLY', 'only a trailing SETTINGS clause is allowed, and it may not set readonly or profile')
  }
  return trailing ? `${canonical}, readonly = 1` : `${canonical} SETTINGS readonly = 1`
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'EAI_AGAIN'])

/** A connection failure (no server answered), as opposed to ClickHouse refusing the query. */
function unreachable (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && NETWORK_CODES.has(code)
}

async function * concatFiles (paths: readonly string[]): AsyncGenerator<Buffer> {
  for (const p of paths) for await (const chunk of createReadStream(p)) yield chunk as Buffer
}

async function readAll (stream: Readable): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

// The sink reports failures itself, rate-limited; the client would log every
// failed request of a retry loop.
const QUIET = { level: ClickHouseLogLevel.OFF }

type ClientConnection = NonNullable<NonNullable<Parameters<typeof createClient>[0]>['connection']>

// Server configuration of the embedded engine, fixed when the first
// connection to a data directory opens (chdb/connection cannot pass it, so
// open() opens a Session with these first and the client's connection joins
// its engine). The memory worker wakes every 100 ms by default to re-read
// cgroup and allocator statistics; on this VM a thread wake-up costs
// ~200 µs of CPU, so it alone took 6.2 ms of CPU per second on an idle
// store, 1.6 at 10 s (measured, /proc/<pid>/task/*/schedstat). It only
// corrects memory accounting and returns freed pages to the OS, which a
// cost store doing a few inserts a minute can do every 10 s.
const ENGINE_ARGS = ['--memory_worker_period_ms=10000']

function hasFaults (f: FaultOptions): boolean {
  return (f.failInserts ?? 0) > 0 || (f.failAfterInsert ?? 0) > 0
}

export class ClickHouseBackend {
  /** Quoted database name the cost tables live in. */
  readonly qdb: string
  private chain: Promise<unknown> = Promise.resolve()

  private constructor (readonly kind: 'embedded' | 'http', private readonly db: string, private readonly client: ClickHouseClient, private readonly engine: Session | null = null) {
    this.qdb = quoteIdent(db)
  }

  /** Opens (embedded: creates the data directory and binds this process to it). Does not touch the schema. */
  static open (cfg: CostBackendConfig, faults: FaultOptions = {}): ClickHouseBackend {
    if (cfg.kind === 'embedded') {
      let conn
      let engine: Session | null = null
      try {
        mkdirSync(cfg.dataDir, { recursive: true })
        engine = new Session(cfg.dataDir, { connectionArgs: ENGINE_ARGS })
        conn = createChdbConnection({ path: cfg.dataDir })
      } catch (err) {
        engine?.close()
        // Only a directory this process can write may be held by another.
        const hint = writable(cfg.dataDir) ? ' (is another process using this data directory?)' : ' (the directory is not writable by this process)'
        throw new CostError('FW_ERR_COST_BACKEND_UNAVAILABLE', `embedded ClickHouse at ${cfg.dataDir}: ${errorText(err)}${hint}`)
      }
      const connection = hasFaults(faults) ? new FaultyConnection(conn, faults) : conn
      // chdb/connection is typed against @clickhouse/client-common, the
      // client against its bundled copy of the same interface.
      return new ClickHouseBackend('embedded', 'default', createClient({ connection: connection as unknown as ClientConnection, log: QUIET }), engine)
    }
    try {
      void new URL(cfg.url)
    } catch {
      throw new CostError('FW_ERR_COST_OPTIONS_INVALID', `backend.url ${cfg.url} is not a URL`)
    }
    const db = cfg.database ?? 'default'
    const client = createClient({
      url: cfg.url,
      ...(cfg.username === undefined ? {} : { username: cfg.username }),
      ...(cfg.password === undefined ? {} : { password: cfg.password }),
      database: db,
      request_timeout: cfg.requestTimeoutMs ?? 30_000,
      application: 'fairway-cost',
      log: QUIET,
    })
    return new ClickHouseBackend('http', db, client)
  }

  /** Applies pending migrations; returns the schema version now in place. */
  async migrate (): Promise<number> {
    return await this.serial(async () => {
      try {
        await this.client.command({ query: migrationsTable(this.qdb) })
      } catch (err) {
        throw new CostError('FW_ERR_COST_BACKEND_UNAVAILABLE', errorText(err))
      }
      const r = await this.client.query({ query: `SELECT max(version) AS v FROM ${this.qdb}.schema_migrations`, format: 'JSONEachRow' })
      let current = Number((await r.json<{ v: number | string }>())[0]?.v ?? 0)
      for (const m of MIGRATIONS) {
        if (m.version <= current) continue
        try {
          for (const s of m.statements(this.qdb, this.db)) await this.runStep(s)
          // No dedup token here: schema_migrations has no dedup window, and
          // the fault injector treats token-carrying inserts as batch inserts.
          await this.client.command({ query: `INSERT INTO ${this.qdb}.schema_migrations (version, name) VALUES (${m.version}, ${quoteLiteral(m.name)})` })
        } catch (err) {
          throw new CostError('FW_ERR_COST_MIGRATION_FAILED', `${m.version} (${m.name})`, errorText(err))
        }
        current = m.version
      }
      return current
    })
  }

  private async runStep (s: MigrationStatement): Promise<void> {
    if (typeof s !== 'string') {
      const r = await this.client.query({ query: `SELECT toUInt64((${s.onlyIf})) AS n`, format: 'JSONEachRow' })
      if (Number((await r.json<{ n: number | string }>())[0]?.n ?? 0) === 0) return
    }
    await this.client.command({ query: typeof s === 'string' ? s : s.sql })
  }

  /**
   * Inserts spooled batches of one table as ONE insert, deduplicated by
   * `token` (a lone batch's id, or its group's token). Resolves only once
   * ClickHouse acknowledged it. Members of a group are Native batches with
   * the same columns; one that differs is refused as corrupt, and the sink
   * then inserts the members one by one.
   */
  async insert (entries: readonly SpoolEntry[], token: string): Promise<void> {
    const head = entries[0]
    if (head === undefined) return
    const types = TABLE_COLUMNS[head.table]
    if (types === undefined) throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', head.path, `unknown table ${head.table}`)
    const cols = await readSpoolColumns(head)
    for (const c of cols) if (types[c] === undefined) throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', head.path, `unknown column ${c} of ${head.table}`)
    const list = cols.join(', ')
    for (const e of entries.slice(1)) {
      if (e.table !== head.table || e.format !== 'native' || head.format !== 'native') throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', e.path, 'a group holds Native batches of one table only')
      if ((await readSpoolColumns(e)).join(', ') !== list) throw new CostError('FW_ERR_COST_SPOOL_CORRUPT', e.path, `columns differ from ${basename(head.path)} of its group`)
    }
    const settings: ClickHouseSettings = {
      insert_deduplication_token: token,
      insert_deduplicate: 1,
      deduplicate_blocks_in_dependent_materialized_views: 1,
      async_insert: 0,
      // Leave collapsing (Replacing/Aggregating/Summing) to background merges
      // instead of doing it inside each inserted block: +30-40% rows per CPU
      // second on insert, measured; results are unchanged (readers aggregate).
      optimize_on_insert: 0,
    }
    const target = `${this.qdb}.${head.table}`
    if (this.kind === 'embedded') {
      // A Native file names and types its columns; TSV needs the structure
      // spelled out (plain String for LowCardinality: +50% rows/s parsing,
      // measured). A group is one file() over a {a,b,...} glob of its
      // members' names: one insert and, for up to min_insert_block_size_rows
      // (~1M) rows, one block — so a retry forms the same single block and
      // the token deduplicates it.
      const path = entries.length === 1 ? head.path : join(dirname(head.path), `{${entries.map((e) => basename(e.path)).join(',')}}`)
      const source = head.format === 'native'
        ? `file(${quoteLiteral(path)}, 'Native')`
        : `file(${quoteLiteral(path)}, 'TabSeparatedWithNames', ${quoteLiteral(cols.map((c) => `${c} ${(types[c] ?? 'String').replace(/^LowCardinality\((.*)\)$/, '$1')}`).join(', '))})`
      await this.serial(() => this.client.command({
        query: `INSERT INTO ${target} (${list}) SELECT ${list} FROM ${source}`,
        clickhouse_settings: settings,
      }))
      return
    }
    // Native blocks concatenate: a group's files, one after another, are one valid body.
    const r = await this.client.exec({
      query: `INSERT INTO ${target} (${list}) FORMAT ${head.format === 'native' ? 'Native' : 'TabSeparatedWithNames'}`,
      values: entries.length === 1 ? createReadStream(head.path) : Readable.from(concatFiles(entries.map((e) => e.path))),
      clickhouse_settings: settings,
    })
    await readAll(r.stream) // the (empty) body ends once the insert is committed
  }

  async query (sql: string, format: QueryFormat = 'JSONEachRow', opts: QueryOptions = {}): Promise<string> {
    if (!(QUERY_FORMATS as readonly string[]).includes(format)) throw new CostError('FW_ERR_COST_QUERY_FAILED', `unknown format ${format} (use ${QUERY_FORMATS.join(', ')})`)
    return await this.serial(async () => {
      const q = opts.readonly === true ? readonlySql(await this.canonical(sql)) : sql
      try {
        const r = await this.client.exec({
          query: q,
          // PrettyCompact is a valid server format the client's type does not list.
          clickhouse_settings: { default_format: format } as ClickHouseSettings,
          ...(opts.params === undefined ? {} : { query_params: opts.params }),
        })
        return await readAll(r.stream)
      } catch (err) {
        // 164 READONLY: the statement would write.
        if (opts.readonly === true && (err as { code?: unknown }).code === '164') throw new CostError('FW_ERR_COST_QUERY_NOT_READONLY', errorText(err).trim())
        throw new CostError(unreachable(err) ? 'FW_ERR_COST_BACKEND_UNAVAILABLE' : 'FW_ERR_COST_QUERY_FAILED', errorText(err).trim())
      }
    })
  }

  async close (): Promise<void> {
    await this.serial(async () => {
      try {
        await this.client.close()
      } finally {
        this.engine?.close()
      }
    })
  }

  /** One statement, comments stripped, or FW_ERR_COST_QUERY_NOT_READONLY (multi-statement, syntax). */
  private async canonical (sql: string): Promise<string> {
    try {
      const r = await this.client.query({ query: 'SELECT formatQuerySingleLine({sql:String}) AS q', query_params: { sql }, format: 'JSONEachRow' })
      const q = (await r.json<{ q: string }>())[0]?.q
      if (typeof q !== 'string' || q === '') throw new Error('empty statement')
      return q
    } catch (err) {
      // A ClickHouse error (it has a type) is about the SQL; a connection
      // failure is the store being away; anything else failed the query.
      const kind = typeof (err as { type?: unknown }).type === 'string' ? 'FW_ERR_COST_QUERY_NOT_READONLY' : unreachable(err) ? 'FW_ERR_COST_BACKEND_UNAVAILABLE' : 'FW_ERR_COST_QUERY_FAILED'
      throw new CostError(kind, errorText(err).trim())
    }
  }

  // Embedded: one statement at a time on the one session (see the header).
  private serial<T> (fn: () => Promise<T>): Promise<T> {
    if (this.kind !== 'embedded') return fn()
    const p = this.chain.then(fn, fn)
    this.chain = p.catch(() => {})
    return p
  }
}
