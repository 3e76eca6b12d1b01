// Test-only faults around the REAL ClickHouse connection (never a fake
// store): the wrapped connection forwards every call; only batch inserts —
// recognised by their insert_deduplication_token — can be made to fail
// before they reach ClickHouse, or to reach it and then report failure (the
// acknowledgement lost on the way back, the case deduplication exists for).
// The crash fault lives in the sink (it must kill the process between the
// insert and the spool removal).

import type { Readable } from 'node:stream'
import type {
  ConnBaseQueryParams, ConnCommandResult, ConnExecParams, ConnExecResult, ConnInsertParams,
  ConnInsertResult, ConnPingParams, ConnPingResult, ConnQueryResult, Connection,
} from 'chdb/connection'

export interface FaultOptions {
  /** The next N batch inserts throw without reaching ClickHouse. */
  failInserts?: number
  /** The next N batch inserts are committed by ClickHouse, then throw as if the reply was lost. */
  failAfterInsert?: number
  /** Kill the process (SIGKILL) right after the first acknowledged insert, before its spool file is removed. */
  crashAfterInsertBeforeUnspool?: boolean
}

export class InjectedFault extends Error {
  constructor (message: string) {
    super(`injected fault: ${message}`)
    this.name = 'InjectedFault'
  }
}

export class FaultyConnection implements Connection<Readable> {
  private failBefore: number
  private failAfter: number

  constructor (private readonly inner: Connection<Readable>, faults: FaultOptions) {
    this.failBefore = faults.failInserts ?? 0
    this.failAfter = faults.failAfterInsert ?? 0
  }

  private async guard<T> (params: ConnBaseQueryParams, call: () => Promise<T>): Promise<T> {
    if (params.clickhouse_settings?.insert_deduplication_token === undefined) return await call()
    if (this.failBefore > 0) {
      this.failBefore--
      throw new InjectedFault('insert failed before reaching ClickHouse')
    }
    const res = await call()
    if (this.failAfter > 0) {
      this.failAfter--
      throw new InjectedFault('insert committed but its acknowledgement was lost')
    }
    return res
  }

  ping (params: ConnPingParams): Promise<ConnPingResult> { return this.inner.ping(params) }
  query (params: ConnBaseQueryParams): Promise<ConnQueryResult<Readable>> { return this.inner.query(params) }
  insert (params: ConnInsertParams<Readable>): Promise<ConnInsertResult> { return this.guard(params, () => this.inner.insert(params)) }
  command (params: ConnBaseQueryParams): Promise<ConnCommandResult> { return this.guard(params, () => this.inner.command(params)) }
  exec (params: ConnExecParams<Readable>): Promise<ConnExecResult<Readable>> { return this.guard(params, () => this.inner.exec(params)) }
  close (): Promise<void> { return this.inner.close() }
}
