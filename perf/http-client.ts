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
    // After a close, reconnect: net.Socket holds the write until connected.
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
        this.status = Number(head.slice(9, 12))
        this.code = this.status >= 300 ? (ERROR_CODE.exec(head)?.[1] ?? '') : ''
        this.chunked = CHUNKED.test(head)
        const len = CONTENT_LENGTH.exec(head)
        this.bodyLeft = this.chunked ? 0 : len === null ? 0 : Number(len[1])
        buf = buf.subarray(end + 4)
      }
      if (this.bodyLeft === 0 && this.chunked && !this.lastChunk) {
        // Chunked body (node:http without a content-length): a hex size
        // line, then that many bytes and CRLF; size 0 ends it (no trailers).
        const eol = buf.indexOf(CRLF)
        if (eol < 0) { this.pending = buf; return }
        const size = parseInt(buf.toString('latin1', 0, eol), 16)
        if (Number.isNaN(size)) { this.protocolError('http_bad_chunk'); return }
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
      this.reset()
      if (ex === null) { this.protocolError('http_unexpected_response'); return }
      this.current = null
      ex.onResponse(status, code)
      this.pool.released(this)
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
  private waiting: Array<{ request: Buffer, ex: HttpExchange }> = []
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
    if (this.waitHead < this.waiting.length) {
      const next = this.waiting[this.waitHead++] as { request: Buffer, ex: HttpExchange }
      if (this.waitHead === this.waiting.length) { this.waiting = []; this.waitHead = 0 }
      c.send(next.request, next.ex)
      return
    }
    this.idle.push(c)
  }

  /**
   * Forgets a request the caller timed out, waiting or on a connection (whose
   * socket is then dropped and reopened for the next request). Timeouts are
   * rare, so a linear search is fine here.
   */
  abandon (ex: HttpExchange): void {
    for (let i = this.waitHead; i < this.waiting.length; i++) {
      if (this.waiting[i]?.ex === ex) { this.waiting.splice(i, 1); return }
    }
    for (const c of this.all) if (c.abandon(ex)) return
  }

  close (): void {
    this.closed = true
    for (const c of this.all) c.destroy()
  }
}
