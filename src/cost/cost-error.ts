// Errors of the cost pipeline. They carry stable FW_ERR_COST_* codes shaped
// like src/errors.ts entries (status + message template) so the table below
// can be merged into the central registry verbatim; until then the pipeline
// throws CostError, which has the same `code` / `statusCode` fields as
// FairwayError.

export const COST_ERRORS = {
  FW_ERR_COST_OPTIONS_INVALID: { status: 500, message: 'invalid cost pipeline options: %s' },
  FW_ERR_COST_BACKEND_UNAVAILABLE: { status: 503, message: 'cost store unavailable: %s' },
  FW_ERR_COST_BACKEND_LOCKED: { status: 500, message: 'cost data directory %s is in use by another process (%s)' },
  FW_ERR_COST_SPOOL_LOCKED: { status: 500, message: 'cost spool %s is owned by %s' },
  FW_ERR_COST_SPOOL_IO: { status: 500, message: 'cost spool %s: %s' },
  FW_ERR_COST_SPOOL_CORRUPT: { status: 500, message: 'cost spool entry %s is unreadable: %s' },
  FW_ERR_COST_MIGRATION_FAILED: { status: 500, message: 'cost schema migration %s failed: %s' },
  FW_ERR_COST_QUERY_FAILED: { status: 400, message: 'cost query failed: %s' },
  FW_ERR_COST_QUERY_NOT_READONLY: { status: 400, message: 'a read-only cost query must be one SELECT/SHOW/DESCRIBE/EXPLAIN statement: %s' },
  FW_ERR_COST_TIMEOUT: { status: 504, message: 'cost pipeline %s did not finish within %s ms' },
  FW_ERR_COST_CLOSED: { status: 503, message: 'cost pipeline is closed' },
  FW_ERR_COST_SINK_CRASHED: { status: 500, message: 'cost sink thread stopped: %s' },
  FW_ERR_COST_RECORD_INVALID: { status: 400, message: 'invalid capacity record %s: %s' },
} as const

export type CostErrorCode = keyof typeof COST_ERRORS

export class CostError extends Error {
  readonly code: CostErrorCode
  readonly statusCode: number

  constructor (code: CostErrorCode, ...args: Array<string | number>) {
    let i = 0
    super(COST_ERRORS[code].message.replace(/%s/g, () => String(args[i++] ?? '')))
    this.name = 'CostError'
    this.code = code
    this.statusCode = COST_ERRORS[code].status
  }

  /** Rebuilds an error that crossed the worker boundary as { code, message }. */
  static revive (code: string, message: string): CostError {
    const c = (code in COST_ERRORS ? code : 'FW_ERR_COST_SINK_CRASHED') as CostErrorCode
    const e = new CostError(c)
    e.message = message
    return e
  }
}

export function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
