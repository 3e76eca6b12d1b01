// `fairway sql` and `fairway cost replay`: the operator's two doors into the
// cost store. Both run in their own CLI process. With --data-dir they open
// the embedded store directly, which works only while no server holds that
// directory (libchdb locks it); against a running server use --url, or the
// server's own query path.

import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ClickHouseBackend, type CostBackendConfig, type QueryFormat } from '../cost/clickhouse-backend.js'
import { CostError, errorText } from '../cost/cost-error.js'
import { CostPipeline } from '../cost/cost-pipeline.js'
import { listSpool } from '../cost/spool.js'

export const SQL_USAGE = `usage: fairway sql "<query>" [--format table|json|csv|tsv] [--param NAME=VALUE ...] [--write]
                  [--data-dir DIR | --url URL [--user USER] [--database DB]]
  Runs one query on the cost store and prints the result (default format: table).
  Read-only (ClickHouse readonly=1) unless --write. {NAME:Type} placeholders take --param values.
  The store defaults to $FAIRWAY_COST_URL or $FAIRWAY_COST_DATA_DIR; the password comes from $FAIRWAY_COST_PASSWORD.`

export const REPLAY_USAGE = `usage: fairway cost replay --spool DIR [--timeout SECONDS]
                          [--data-dir DIR | --url URL [--user USER] [--database DB]]
  Inserts every batch left in a spool directory into the cost store, each exactly once
  (batches already in the store are recognised by their id and skipped), and removes them.`

export interface CliIO {
  out: (text: string) => void
  err: (text: string) => void
}

const STDIO: CliIO = {
  out: (text) => { process.stdout.write(text) },
  err: (text) => { process.stderr.write(text) },
}

const FORMATS: Record<string, QueryFormat> = {
  table: 'PrettyCompact',
  json: 'JSONEachRow',
  csv: 'CSVWithNames',
  tsv: 'TabSeparatedWithNames',
}

const BACKEND_OPTIONS = {
  'data-dir': { type: 'string' },
  url: { type: 'string' },
  user: { type: 'string' },
  database: { type: 'string' },
} as const

class UsageError extends Error {}

function backendFrom (v: { 'data-dir'?: string, url?: string, user?: string, database?: string }): CostBackendConfig {
  const url = v.url ?? (v['data-dir'] === undefined ? process.env.FAIRWAY_COST_URL : undefined)
  const dataDir = v['data-dir'] ?? (url === undefined ? process.env.FAIRWAY_COST_DATA_DIR : undefined)
  if (v.url !== undefined && v['data-dir'] !== undefined) throw new UsageError('give --data-dir or --url, not both')
  if (url !== undefined && url !== '') {
    const password = process.env.FAIRWAY_COST_PASSWORD
    return {
      kind: 'http',
      url,
      ...(v.user === undefined ? {} : { username: v.user }),
      ...(password === undefined ? {} : { password }),
      ...(v.database === undefined ? {} : { database: v.database }),
    }
  }
  if (dataDir !== undefined && dataDir !== '') return { kind: 'embedded', dataDir }
  throw new UsageError('no cost store: give --data-dir DIR or --url URL (or set FAIRWAY_COST_DATA_DIR / FAIRWAY_COST_URL)')
}

function describe (b: CostBackendConfig): string {
  return b.kind === 'embedded' ? `embedded store ${b.dataDir}` : `ClickHouse at ${b.url}`
}

function report (io: CliIO, err: unknown, usage: string): number {
  if (err instanceof UsageError || (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true)) {
    io.err(`fairway: ${err.message}\n${usage}\n`)
    return 2
  }
  io.err(err instanceof CostError ? `fairway: ${err.code}: ${err.message}\n` : `fairway: ${errorText(err)}\n`)
  return 1
}

/** `fairway sql "<query>" ...`; resolves to the process exit code. */
export async function runSql (argv: string[], io: CliIO = STDIO): Promise<number> {
  let backend: ClickHouseBackend | null = null
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...BACKEND_OPTIONS, format: { type: 'string', default: 'table' }, param: { type: 'string', multiple: true }, write: { type: 'boolean', default: false } },
      allowPositionals: true,
      strict: true,
    })
    if (positionals.length !== 1 || positionals[0]?.trim() === '') throw new UsageError('give exactly one query, quoted')
    const format = FORMATS[values.format]
    if (format === undefined) throw new UsageError(`--format must be one of ${Object.keys(FORMATS).join(', ')}`)
    const params: Record<string, string> = {}
    for (const p of values.param ?? []) {
      const eq = p.indexOf('=')
      if (eq <= 0) throw new UsageError(`--param wants NAME=VALUE, got ${p}`)
      params[p.slice(0, eq)] = p.slice(eq + 1)
    }
    const cfg = backendFrom(values)
    // Read-only on a directory that is not there: a typo, not an empty store
    // (opening it would create one and answer 0 for every cost).
    if (cfg.kind === 'embedded' && values.write !== true && !existsSync(cfg.dataDir)) throw new UsageError(`--data-dir ${cfg.dataDir}: no such directory (use --write to create a store there)`)
    backend = ClickHouseBackend.open(cfg)
    // A fresh embedded directory gets the schema, so its tables can be queried
    // at once; a server's schema is the pipeline's business (and the CLI user
    // may be read-only there).
    if (cfg.kind === 'embedded') await backend.migrate()
    const text = await backend.query(positionals[0] as string, format, { readonly: !values.write, ...(values.param === undefined ? {} : { params }) })
    io.out(text.endsWith('\n') || text === '' ? text : text + '\n')
    return 0
  } catch (err) {
    return report(io, err, SQL_USAGE)
  } finally {
    await backend?.close().catch(() => {})
  }
}

/** `fairway cost replay --spool DIR ...`; resolves to the process exit code (0: spool empty afterwards). */
export async function runCostReplay (argv: string[], io: CliIO = STDIO): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...BACKEND_OPTIONS, spool: { type: 'string' }, timeout: { type: 'string', default: '300' } },
      allowPositionals: true,
      strict: true,
    })
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0] ?? ''}`)
    if (values.spool === undefined || values.spool === '') throw new UsageError('--spool DIR is required')
    const timeoutMs = Number(values.timeout) * 1000
    if (!(timeoutMs > 0)) throw new UsageError('--timeout must be a number of seconds > 0')
    const cfg = backendFrom(values)
    // A mistyped path to a dead node's spool must not look like a replay of nothing.
    if (!existsSync(values.spool)) throw new UsageError(`--spool ${values.spool}: no such directory`)
    const batches = await listSpool(values.spool)
    if (batches.length === 0) {
      io.out(`${values.spool}: no spooled batches\n`)
      return 0
    }
    const rows = batches.reduce((n, b) => n + b.rows, 0)
    io.out(`${values.spool}: ${batches.length} batches (${rows} rows) -> ${describe(cfg)}\n`)
    const p = await CostPipeline.start({ backend: cfg, spoolDir: values.spool, log: (m) => { io.err(`fairway: ${m}\n`) } })
    let flushed = true
    try {
      await p.flush({ timeoutMs })
    } catch (err) {
      flushed = false
      io.err(`fairway: ${err instanceof CostError ? `${err.code}: ` : ''}${errorText(err)}\n`)
    }
    const s = p.stats()
    await p.close({ timeoutMs: 1_000 })
    const after = await listSpool(values.spool)
    io.out(`inserted ${s.inserted} rows in ${s.insertedBatches} batches (already-stored batches are skipped by ClickHouse); ` +
      `dead-lettered ${s.deadLetterBatches}; ${after.length} batches left in the spool\n`)
    return flushed && after.length === 0 && s.deadLetterBatches === 0 ? 0 : 1
  } catch (err) {
    return report(io, err, REPLAY_USAGE)
  }
}
