// Writing responses on a uWS HttpResponse. A response may only be touched
// while the request is alive: every async path checks `aborted` first and
// wraps its writes in cork() so status, headers and body leave in one syscall.

import type { HttpResponse } from '@trufflesuite/uws-js-unofficial'
import { FairwayError, fwError } from '../errors.js'
import { encodeMsgpack } from './oip-codec.js'

const STATUS: Record<number, string> = {
  200: '200 OK',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  426: '426 Upgrade Required',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
  504: '504 Gateway Timeout',
}

export const JSON_TYPE = 'application/json'
export const MSGPACK_TYPE = 'application/msgpack'

/** Per-request state shared by the handler and its async continuations. */
export interface Exchange {
  readonly res: HttpResponse
  aborted: boolean
  /** Reply in MessagePack (request body or Accept asked for it). */
  msgpack: boolean
  /** Extra work when the client goes away (e.g. give back an admission). */
  onAbort: (() => void) | null
}

export function statusLine (status: number): string {
  return STATUS[status] ?? `${status} Error`
}

export function send (ex: Exchange, status: number, body: string | Buffer, contentType: string, close = false): void {
  if (ex.aborted) return
  ex.aborted = true // a response is written at most once
  ex.res.cork(() => {
    ex.res.writeStatus(statusLine(status)).writeHeader('content-type', contentType).end(body, close)
  })
}

export function sendValue (ex: Exchange, status: number, value: unknown): void {
  if (ex.msgpack) send(ex, status, encodeMsgpack(value), MSGPACK_TYPE)
  else send(ex, status, JSON.stringify(value), JSON_TYPE)
}

/**
 * OIP error body `{"error": "..."}` plus the stable code, in the body and in
 * the `x-fairway-error-code` header so clients can branch without parsing.
 */
export function sendError (ex: Exchange, err: unknown, close = false): void {
  if (ex.aborted) return
  const e = err instanceof FairwayError ? err : fwError('FW_ERR_INTERNAL')
  if (!(err instanceof FairwayError)) console.error('fairway: unexpected error', err)
  ex.aborted = true
  const body: Record<string, string | number> = { error: e.message, code: e.code }
  if (e.reason !== null) body.reason = e.reason
  if (e.retryAfterMs !== null) body.retry_after_ms = e.retryAfterMs
  const payload = ex.msgpack ? encodeMsgpack(body) : JSON.stringify(body)
  ex.res.cork(() => {
    ex.res.writeStatus(statusLine(e.statusCode))
      .writeHeader('content-type', ex.msgpack ? MSGPACK_TYPE : JSON_TYPE)
      .writeHeader('x-fairway-error-code', e.code)
    if (e.reason !== null) ex.res.writeHeader('x-fairway-reject-reason', e.reason)
    // Retry-After is whole seconds (RFC 9110); the body carries the ms value.
    if (e.retryAfterMs !== null) ex.res.writeHeader('retry-after', String(Math.max(1, Math.ceil(e.retryAfterMs / 1000))))
    if (e.statusCode === 401) ex.res.writeHeader('www-authenticate', 'Bearer')
    ex.res.end(payload, close)
  })
}
