// The load generator's HTTP/1.1 client: keep-alive connections over plain
// `net` sockets, each request a pre-encoded buffer written with one call, each
// response parsed for its status, length and fairway's error-code header only.
//
// Why not undici: on this 2-core machine undici cost the generator ~120 µs of
// CPU per request at 2,000 req/s, more than the server under test spends; the
// generator then competes with the server for the same cores and its own
// send lag dominates the tail it is meant to measure. This client does the
// least an HTTP/1.1 client can (one write, one small parse per response).
//
// One request per connection at a time (no pipelining, as undici's
// `pipelining: 1`): a request that finds every connection busy waits here, in
// order, and that wait is part of its latency (measured from its intended
// time by the caller).

import { connect, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'

/** The caller's side of one request; exactly one of onResponse / onError is called, once. */
export interface HttpExchange {
  /** The request was written to a connection. */
  onWire (): void
  /** A whole response arrived: its status and `x-fairway-error-code` ('' when absent). */
  onResponse (status: number, errorCode: string): void
  /** No response: the connection failed or closed first (code such as ECONNRESET, socket_closed). */
  onError (code: string): void
}

/** Builds the bytes of one POST with a body (HTTP/1.1, keep-alive). */
export function encodePost (host: string, path: string, headers: Record<string, string>, body: Uint8Array | string): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body)
  let head = `POST ${path} HTTP/1.1\r\nhost: ${host}\r\n`
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== 'content-length' && k.toLowerCase() !== 'host') head += `${k}: ${v}\r\n`
  }
  head += `content-length: ${payload.length}\r\n\r\n`
  return Buffer.concat([Buffer.from(head, 'latin1'), payload])
}

const CRLF = Buffer.from('\r\n', 'latin1')
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1')
const CONTENT_LENGTH = /\r\ncontent-length:[ \t]*(\d+)/i
const ERROR_CODE = /\r\nx-fairway-error-code:[ \t]*([^\r\n]*)/i
const CHUNKED = /\r\ntransfer-encoding:[ \t]*chunked/i
const CONNECTION_CLOSE = /\r\nconnection:[ \t]*close/i
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})/
/**
 * A connection idle this long is reopened before its next request: servers
 * drop idle keep-alive sockets (node:http after 5 s), and a request written
 * as the server closes would fail though the server never saw it.
 */
const IDLE_REOPEN_MS = 4000

class Connection {
  private socket: Socket | null = null
  /** The request on the wire, or null when idle. */
  private current: HttpExchange | null = null
  /** Unparsed bytes of the current response (headers not complete yet). */
  private pending: Buffer | null = null
  /** Body bytes still to skip; -1 while reading headers. */
  private bodyLeft = -1
  private status = 0
  private code = ''
  /** Chunked body: bodyLeft counts the current chunk (and its CRLF). */
  private chunked = false
  private lastChunk = false
  /** The server said `connection: close`: reopen after this response. */
  private closeAfter = false
  /** performance.now() when the last response ended (or the socket opened). */
  private lastUsed = 0

  constructor (private readonly pool: HttpClient) {}

  /** Connects up front; resolves when connected (or rejects with the connect error). */
  open (): Promise<void> {
    const s = this.connectSocket()
    return new Promise((resolve, reject) => {
      s.once('connect', () => { s.off('error', reject); resolve() })
      s.once('error', reject)
    })
  }

  private connectSocket (): Socket {
    const s = connect({ host: this.pool.host, port: this.pool.port, noDelay: true })
    this.socket = s
    this.lastUsed = performance.now()
    let error = 'socket_closed'
    s.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.name })
    s.on('data', (chunk: Buffer) => { this.onData(chunk) })
    s.once('close', () => {
      // Only the live socket's close fails its request: one dropped by
      // destroy() has been replaced (or forgotten) already.
      if (this.socket !== s) return
      this.socket = null
      this.fail(error)
    })
    return s
  }

  send (request: Buffer, ex: HttpExchange): void {
    this.current = ex
    if (this.socket !== null && (!this.socket.writable || performance.now() - this.lastUsed > IDLE_REOPEN_MS)) this.destroy()
    // Closed or stale: reconnect. net.Socket holds the write until connected,
    // so a reconnect's connect time is part of this request's service time.
    const s = this.socket ?? this.connectSocket()
    ex.onWire()
    s.write(request)
  }

  /**
   * Gives up on `ex` if it is this connection's request (the caller timed it
   * out): the socket is dropped so a late reply cannot match the next request.
   */
  abandon (ex: HttpExchange): boolean {
    if (this.current !== ex) return false
    this.current = null
    this.destroy()
    this.pool.released(this)
    return true
  }

  destroy (): void {
    const s = this.socket
    this.socket = null
    s?.destroy()
    this.reset()
  }

  private reset (): void {
    this.pending = null
    this.bodyLeft = -1
    this.status = 0
    this.code = ''
    this.chunked = false
    this.lastChunk = false
    this.closeAfter = false
  }

  private onData (chunk: Buffer): void {
    let buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk])
    this.pending = null
    while (buf.length > 0) {
      if (this.bodyLeft < 0 && !this.chunked) {
        const end = buf.indexOf(CRLFCRLF)
        if (end < 0) { this.pending = buf; return }
        // Responses are small and headers are read once: a latin1 string and
        // three regexes cost ~1 µs, far below a socket read.
        const head = buf.toString('latin1', 0, end)
        const status = STATUS_LINE.exec(head)
        if (status === null) { this.protocolError('http_bad_status_line'); return }
        this.status = Number(status[1])
        buf = buf.subarray(end + 4)
        // 1xx (100 Continue): an interim head without a body; the final
        // response follows on the same connection.
        if (this.status < 200) { this.status = 0; continue }
        this.closeAfter = CONNECTION_CLOSE.test(head)
        this.code = this.status >= 300 ? (ERROR_CODE.exec(head)?.[1] ?? '') : ''
        this.chunked = CHUNKED.test(head)
        const len = CONTENT_LENGTH.exec(head)
        this.bodyLeft = this.chunked ? 0 : len === null ? 0 : Number(len[1])
      }
      if (this.bodyLeft === 0 && this.chunked && !this.lastChunk) {
        // Chunked body (node:http without a content-length): a hex size
        // line, then that many bytes and CRLF; size 0 ends it (no trailers).
        const eol = buf.indexOf(CRLF)
        if (eol < 0) { this.pending = buf; return }
        const size = parseInt(buf.toString('latin1', 0, eol), 16)
        // Trailers after the last chunk are not parsed: refuse rather than
        // let them be read as the next response.
        if (Number.isNaN(size) || (size === 0 && buf.length >= eol + 4 && buf.toString('latin1', eol + 2, eol + 4) !== '\r\n')) { this.protocolError('http_bad_chunk'); return }
        this.lastChunk = size === 0
        this.bodyLeft = size + 2
        buf = buf.subarray(eol + 2)
      }
      const take = Math.min(this.bodyLeft, buf.length)
      this.bodyLeft -= take
      buf = buf.subarray(take)
      if (this.bodyLeft > 0 || (this.chunked && !this.lastChunk)) continue
      const ex = this.current
      const status = this.status
      const code = this.code
      const close = this.closeAfter
      this.reset()
      if (ex === null) { this.protocolError('http_unexpected_response'); return }
      this.current = null
      this.lastUsed = performance.now()
      if (close) this.destroy()
      ex.onResponse(status, code)
      this.pool.released(this)
      if (close) return
    }
  }

  private protocolError (code: string): void {
    this.destroy()
    this.fail(code)
  }

  private fail (code: string): void {
    this.reset()
    const ex = this.current
    if (ex === null) return
    this.current = null
    ex.onError(code)
    this.pool.released(this)
  }
}

/** A fixed set of keep-alive connections to one origin with a FIFO of requests waiting for one. */
export class HttpClient {
  readonly host: string
  readonly port: number
  private readonly idle: Connection[] = []
  private readonly all: Connection[] = []
  /** Requests waiting for a connection, FIFO from waitHead; null = abandoned (timed out). */
  private waiting: Array<{ request: Buffer, ex: HttpExchange } | null> = []
  private waitHead = 0
  private closed = false

  constructor (origin: string, connections: number) {
    const u = new URL(origin)
    if (u.protocol !== 'http:') throw new Error(`the load generator speaks plain http only, not ${u.protocol}`)
    this.host = u.hostname
    this.port = Number(u.port === '' ? 80 : u.port)
    for (let i = 0; i < connections; i++) this.all.push(new Connection(this))
  }

  /**
   * Connects every connection, so connection setup is not charged to the
   * first requests. A connection that fails here retries on its first send,
   * and that request reports the error (ECONNREFUSED, ...).
   */
  async open (): Promise<void> {
    await Promise.all(this.all.map(async (c) => { await c.open().catch(() => {}) }))
    this.idle.push(...this.all)
  }

  send (request: Buffer, ex: HttpExchange): void {
    const c = this.idle.pop()
    if (c === undefined) this.waiting.push({ request, ex })
    else c.send(request, ex)
  }

  /** Called by a connection whose request ended: it takes the next waiting request or goes idle. */
  released (c: Connection): void {
    if (this.closed) return
    while (this.waitHead < this.waiting.length) {
      const next = this.waiting[this.waitHead]
      this.waiting[this.waitHead++] = null
      this.compact()
      if (next === null || next === undefined) continue
      c.send(next.request, next.ex)
      return
    }
    this.idle.push(c)
  }

  /**
   * Forgets a request the caller timed out, waiting or on a connection (whose
   * socket is then dropped and reopened for the next request). The search is
   * linear, but timeouts expire oldest first, which is the waiting head.
   */
  abandon (ex: HttpExchange): void {
    for (let i = this.waitHead; i < this.waiting.length; i++) {
      if (this.waiting[i]?.ex === ex) {
        // Timeouts hit the oldest first, usually the head: skip it, no shifting.
        this.waiting[i] = null
        if (i === this.waitHead) { this.waitHead++; this.compact() }
        return
      }
    }
    for (const c of this.all) if (c.abandon(ex)) return
  }

  /** Drops the consumed head of the waiting queue once it is most of the array. */
  private compact (): void {
    if (this.waitHead === this.waiting.length) { this.waiting = []; this.waitHead = 0 } else if (this.waitHead > 4096 && this.waitHead * 2 > this.waiting.length) { this.waiting = this.waiting.slice(this.waitHead); this.waitHead = 0 }
  }

  close (): void {
    this.closed = true
    for (const c of this.all) c.destroy()
  }
}
