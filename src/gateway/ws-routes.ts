// WebSocket streaming API on the same uWS app: `GET /v2/ws` upgrades after the
// same bearer-key check as HTTP. Each message is one OIP inference request
// plus a client id and the model name; responses go back as they finish, so
// they may be out of order, matched by id. MessagePack in binary frames, JSON
// in text frames; a reply uses the frame type of its request.
//
// Backpressure. uWS 20.30 cannot pause reading a WebSocket, so fairway bounds
// what a connection can hold instead:
//   - at most MAX_INFLIGHT requests in flight per connection (more: a
//     per-message FW_ERR_WS_TOO_MANY_INFLIGHT error);
//   - while the connection's unsent output is over SOFT_BACKPRESSURE, new
//     messages are parked (copied, counted in flight) and only processed on
//     `drain`: a client that does not read gets no new work done for it;
//   - output beyond HARD_BACKPRESSURE closes the connection (uWS
//     closeOnBackpressureLimit).
// So one connection holds at most MAX_INFLIGHT × maxBodyBytes of input plus
// HARD_BACKPRESSURE of output, whatever the client does.
//
// Replies are coalesced: a reply joins its connection's outbox, and one
// microtask per turn sends every outbox inside one cork per connection. A
// batch's completions run in one synchronous loop, so its replies to one
// connection leave in one write instead of one write (a syscall and a wake-up
// of the reader) each. At 20,000 msg/s (open loop, 4 connections) the
// per-message send was the gateway's largest cost: ~15 µs of its ~37 µs per
// message in a CPU profile. Side by side with the per-message send, coalescing
// halved the p50 (2.2 -> 1.1 ms) and cut server CPU by ~4% (51 -> 49 µs/msg).

import { performance } from 'node:perf_hooks'
import type { TemplatedApp, WebSocket } from '@trufflesuite/uws-js-unofficial'
import type { Route, TenantEntry, TenantRegistry } from '../control-plane/registry.js'
import { FairwayError, fwError } from '../errors.js'
import { sendError, type Exchange } from './http-reply.js'
import type { InferenceService } from './inference-service.js'
import { decodeMsgpack, encodeJsonResponse, encodeMsgpack, headOf, messageHead, msgpackResponse, parseInferRequest } from './oip-codec.js'

export const MAX_INFLIGHT = 256
export const SOFT_BACKPRESSURE = 256 * 1024
export const HARD_BACKPRESSURE = 4 * 1024 * 1024

/** Route template recorded in cost events for WebSocket inference. */
const SURFACE = 'ws:/v2/ws'

/** Close codes fairway uses (see README). */
export const CLOSE_GOING_AWAY = 1001

interface Conn {
  readonly tenant: TenantEntry
  inflight: number
  closed: boolean
  /** Messages that arrived while output was over the soft limit. */
  readonly parked: Array<{ bytes: Buffer, binary: boolean, arrived: number }>
  /** Replies not sent yet (flushed by the next microtask), their frame types and bytes. */
  readonly outbox: Array<string | Buffer>
  readonly outboxBinary: boolean[]
  outboxBytes: number
}

export interface WsHandle {
  /** Ends every connection with 1001 (shutdown, after in-flight work finished). */
  closeAll (): void
}

export function registerWebSocket (app: TemplatedApp, registry: TenantRegistry, service: InferenceService, draining: () => boolean): WsHandle {
  const sockets = new Set<WebSocket<Conn>>()
  const maxPayload = registry.config.server.maxBodyBytes

  // Connections with a non-empty outbox, and their state (read before the
  // socket: a closed uWS socket throws on any access). Parallel arrays,
  // reused every turn: nothing is allocated per reply (a flush allocates only
  // the cork callback per connection).
  const flushingWs: Array<WebSocket<Conn>> = []
  const flushingConn: Conn[] = []
  const flush = (): void => {
    for (let k = 0; k < flushingConn.length; k++) {
      const c = flushingConn[k] as Conn
      const ws = flushingWs[k] as WebSocket<Conn>
      if (!c.closed) {
        ws.cork(() => {
          for (let i = 0; i < c.outbox.length; i++) ws.send(c.outbox[i] as string | Buffer, c.outboxBinary[i] === true)
        })
      }
      c.outbox.length = 0
      c.outboxBinary.length = 0
      c.outboxBytes = 0
    }
    flushingWs.length = 0
    flushingConn.length = 0
  }

  const reply = (ws: WebSocket<Conn>, binary: boolean, data: string | Buffer): void => {
    const c = ws.getUserData()
    if (c.closed) return
    if (c.outbox.length === 0) {
      if (flushingConn.length === 0) queueMicrotask(flush)
      flushingWs.push(ws)
      flushingConn.push(c)
    }
    c.outbox.push(data)
    c.outboxBinary.push(binary)
    c.outboxBytes += data.length
  }

  const replyError = (ws: WebSocket<Conn>, binary: boolean, id: string | null, err: unknown): void => {
    const e = err instanceof FairwayError ? err : fwError('FW_ERR_INTERNAL')
    const body: Record<string, unknown> = { id, error: e.message, code: e.code, status: e.statusCode }
    if (e.reason !== null) body.reason = e.reason
    if (e.retryAfterMs !== null) body.retry_after_ms = e.retryAfterMs
    reply(ws, binary, binary ? encodeMsgpack(body) : JSON.stringify(body))
  }

  const processMessage = (ws: WebSocket<Conn>, bytes: Buffer, binary: boolean, arrived: number): void => {
    const c = ws.getUserData()
    let id: string | null = null
    try {
      let msg: unknown
      try {
        msg = binary ? decodeMsgpack(bytes) : JSON.parse(bytes.toString('utf8'))
      } catch {
        throw fwError('FW_ERR_BODY_MALFORMED', binary ? 'MessagePack' : 'JSON')
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'message must be an object')
      const m = msg as Record<string, unknown>
      if (typeof m.id !== 'string' || m.id === '') throw fwError('FW_ERR_INFER_INPUT_INVALID', '"id" (a non-empty string) is required on every WebSocket message')
      id = m.id
      if (typeof m.model !== 'string') throw fwError('FW_ERR_INFER_INPUT_INVALID', '"model" is required on every WebSocket message')
      if (m.version !== undefined && typeof m.version !== 'string') throw fwError('FW_ERR_INFER_INPUT_INVALID', '"version" must be a string')
      if (draining()) throw fwError('FW_ERR_SERVER_DRAINING')
      const route = registry.resolve(c.tenant, m.model, m.version ?? null)
      let request
      try {
        request = parseInferRequest(m, route.model)
      } catch (e) {
        // Bad input from a known tenant is recorded like an HTTP bad request.
        service.cost?.record(route, SURFACE, arrived, 0, 'bad_request', e instanceof FairwayError ? e.statusCode : 500, null)
        throw e
      }
      const reqId = id
      c.inflight++
      try {
        service.submit(route, SURFACE, request, null, arrived, (err, out) => {
          c.inflight--
          if (err !== null || out === null) { replyError(ws, binary, reqId, err); return }
          const v = route.version.version
          reply(ws, binary, binary ? msgpackResponse(route.model, v, reqId, request.rows, out) : encodeJsonResponse(route.model, v, reqId, request.rows, out))
          if (!c.closed) resumeParked(ws)
        })
      } catch (e) {
        c.inflight--
        throw e
      }
    } catch (err) {
      replyError(ws, binary, id, err)
      if (err instanceof FairwayError && err.reason !== null) service.metrics.recordRefusal((performance.now() - arrived) * 1000)
    }
  }

  // A message over the in-flight limit is still read for its id (so the
  // client can match the refusal to its request) and its model (so the
  // refusal is a cost event like any other answered request); MessagePack
  // only that far where it can (messageHead). What cannot be read is refused with id
  // null, as documented.
  const refuseBusy = (ws: WebSocket<Conn>, bytes: Buffer, binary: boolean, arrived: number): void => {
    const c = ws.getUserData()
    const err = fwError('FW_ERR_WS_TOO_MANY_INFLIGHT', MAX_INFLIGHT)
    let id: string | null = null
    let route: Route | null = null
    try {
      const head = binary ? messageHead(bytes) : headOf(JSON.parse(bytes.toString('utf8')))
      if (head !== null) {
        if (head.id !== '') id = head.id
        if (head.model !== null) route = registry.resolve(c.tenant, head.model, head.version)
      }
    } catch {
      // unreadable, or a model the tenant cannot use: refused all the same
    }
    if (route !== null) service.cost?.record(route, SURFACE, arrived, 0, 'too_many_inflight', err.statusCode, null)
    replyError(ws, binary, id, err)
  }

  const resumeParked = (ws: WebSocket<Conn>): void => {
    const c = ws.getUserData()
    while (c.parked.length > 0 && ws.getBufferedAmount() + c.outboxBytes < SOFT_BACKPRESSURE) {
      const p = c.parked.shift()
      if (p === undefined) break
      c.inflight-- // parked messages were counted in flight
      processMessage(ws, p.bytes, p.binary, p.arrived)
    }
  }

  app.ws<Conn>('/v2/ws', {
    maxPayloadLength: maxPayload,
    maxBackpressure: HARD_BACKPRESSURE,
    closeOnBackpressureLimit: 1,
    idleTimeout: 120,
    upgrade: (res, req, context) => {
      const ex: Exchange = { res, aborted: false, msgpack: false, onAbort: null }
      res.onAborted(() => { ex.aborted = true })
      const key = req.getHeader('sec-websocket-key')
      const protocol = req.getHeader('sec-websocket-protocol')
      const extensions = req.getHeader('sec-websocket-extensions')
      if (draining()) { sendError(ex, fwError('FW_ERR_SERVER_DRAINING'), true); return }
      let tenant: TenantEntry
      try {
        tenant = registry.authenticate(req.getHeader('authorization'))
      } catch (err) {
        sendError(ex, err, true)
        return
      }
      res.upgrade<Conn>({ tenant, inflight: 0, closed: false, parked: [], outbox: [], outboxBinary: [], outboxBytes: 0 }, key, protocol, extensions, context)
    },
    open: (ws) => { sockets.add(ws) },
    message: (ws, message, isBinary) => {
      const arrived = performance.now()
      const c = ws.getUserData()
      if (c.inflight >= MAX_INFLIGHT) {
        refuseBusy(ws, Buffer.from(message), isBinary, arrived)
        return
      }
      if (ws.getBufferedAmount() >= SOFT_BACKPRESSURE) {
        // The client is not reading: keep the message (the ArrayBuffer dies
        // with this callback) and do its work only once output drains.
        c.inflight++
        c.parked.push({ bytes: Buffer.from(new Uint8Array(message).slice()), binary: isBinary, arrived })
        return
      }
      // Decoding copies what it keeps (numbers, strings, a fresh Float32Array
      // for the input), so the message's buffer is not retained.
      processMessage(ws, Buffer.from(message), isBinary, arrived)
    },
    drain: (ws) => { resumeParked(ws) },
    close: (ws) => {
      const c = ws.getUserData()
      c.closed = true
      c.parked.length = 0
      sockets.delete(ws)
    },
  })

  return {
    closeAll () {
      for (const ws of [...sockets]) ws.end(CLOSE_GOING_AWAY, 'server shutting down')
    },
  }
}
