// The load generator's WebSocket client (RFC 6455, client side): the upgrade
// over a plain `net` socket, then each message one frame written with one
// call, each reply frame handed over as it completes.
//
// Why not the `ws` package: on this 2-core machine the generator's `ws`
// client took ~0.87 cores at 17,000 messages/s, so a WebSocket sweep measured
// the generator, not the server. This client does the least a client may:
// frames are masked with an all-zero key (RFC 6455 requires a mask, not a
// random one, and XOR with zero leaves the payload as it is: no copy to
// mask), no extensions, no fragmentation on send; fragmented, ping and close
// frames from the server are handled.

import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'

export interface WsHandlers {
  /** A whole message (text or binary). `data` is only valid during the call. */
  onMessage (data: Buffer, binary: boolean): void
  /** The connection ended: the server's close code, or 1006 without a close frame. */
  onClose (code: number): void
}

/** What a refused upgrade said: its HTTP status and x-fairway-error-code. */
export interface WsRefusal { readonly status: number, readonly code: string }

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})/
const ERROR_CODE = /\r\nx-fairway-error-code:[ \t]*([^\r\n]*)/i

/** One client connection; `open` resolves once the upgrade was answered. */
export class WsConnection {
  private socket: Socket | null = null
  private upgraded = false
  private pending: Buffer | null = null
  /** Fragments of a message still being received, and its opcode. */
  private fragments: Buffer[] = []
  private fragmentOpcode = 0
  private closed = false

  constructor (private readonly handlers: WsHandlers) {}

  /**
   * Connects and upgrades. Resolves with null when open, or with the
   * refusal's status and code; rejects on a socket error before the answer.
   */
  open (url: string, headers: Record<string, string>): Promise<WsRefusal | null> {
    const u = new URL(url)
    const s = connect({ host: u.hostname, port: Number(u.port === '' ? 80 : u.port), noDelay: true })
    this.socket = s
    let head = `GET ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
      `sec-websocket-version: 13\r\nsec-websocket-key: ${randomBytes(16).toString('base64')}\r\n`
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
    s.write(head + '\r\n')
    return new Promise((resolve, reject) => {
      let answered = false
      s.on('error', (err) => { if (!answered) { answered = true; reject(err) } })
      s.once('close', () => {
        if (!answered) { answered = true; reject(new Error('socket closed before the upgrade was answered')) }
        this.end(1006)
      })
      s.on('data', (chunk: Buffer) => {
        if (this.upgraded) { this.onData(chunk); return }
        const buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk])
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) { this.pending = buf; return }
        this.pending = null
        const text = buf.toString('latin1', 0, end)
        const status = Number(STATUS_LINE.exec(text)?.[1] ?? 0)
        answered = true
        if (status !== 101) {
          resolve({ status, code: ERROR_CODE.exec(text)?.[1] ?? '' })
          this.closed = true
          s.destroy()
          return
        }
        this.upgraded = true
        resolve(null)
        if (buf.length > end + 4) this.onData(buf.subarray(end + 4))
      })
    })
  }

  /** Sends one message as a single frame (FIN set, zero mask key). */
  send (payload: Buffer, binary: boolean): void {
    this.writeFrame(binary ? 0x2 : 0x1, payload)
  }

  private writeFrame (opcode: number, payload: Buffer): void {
    const s = this.socket
    if (s === null || this.closed) return
    const n = payload.length
    const lenBytes = n < 126 ? 0 : n < 65536 ? 2 : 8
    const frame = Buffer.allocUnsafe(2 + lenBytes + 4 + n)
    frame[0] = 0x80 | opcode
    if (lenBytes === 0) frame[1] = 0x80 | n
    else if (lenBytes === 2) { frame[1] = 0x80 | 126; frame.writeUInt16BE(n, 2) } else { frame[1] = 0x80 | 127; frame.writeBigUInt64BE(BigInt(n), 2) }
    frame.writeUInt32BE(0, 2 + lenBytes) // the mask key: zero, so the payload goes as it is
    payload.copy(frame, 2 + lenBytes + 4)
    s.write(frame)
  }

  private onData (chunk: Buffer): void {
    let buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk])
    this.pending = null
    while (buf.length >= 2) {
      const b0 = buf[0] as number
      const b1 = buf[1] as number
      let len = b1 & 0x7f
      let at = 2
      if (len === 126) {
        if (buf.length < 4) break
        len = buf.readUInt16BE(2)
        at = 4
      } else if (len === 127) {
        if (buf.length < 10) break
        len = Number(buf.readBigUInt64BE(2))
        at = 10
      }
      // Server frames are never masked (RFC 6455 5.1); a masked one is a protocol error.
      if ((b1 & 0x80) !== 0) { this.fail(1002); return }
      if (buf.length < at + len) break
      const payload = buf.subarray(at, at + len)
      buf = buf.subarray(at + len)
      this.onFrame(b0 & 0x80, b0 & 0x0f, payload)
      if (this.closed) return
    }
    if (buf.length > 0) this.pending = buf
  }

  private onFrame (fin: number, opcode: number, payload: Buffer): void {
    if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005
      // Answer the close and end gracefully (FIN, not a reset that could
      // discard what the server has not read yet).
      this.writeFrame(0x8, payload.subarray(0, 2))
      this.socket?.end()
      this.end(code)
      return
    }
    if (opcode === 0x9) { this.writeFrame(0xa, payload); return }
    if (opcode === 0xa) return
    if (opcode !== 0x0) { this.fragments = []; this.fragmentOpcode = opcode }
    if (fin === 0 || this.fragments.length > 0) {
      this.fragments.push(Buffer.from(payload))
      if (fin === 0) return
      const whole = Buffer.concat(this.fragments)
      this.fragments = []
      this.handlers.onMessage(whole, this.fragmentOpcode === 0x2)
      return
    }
    this.handlers.onMessage(payload, opcode === 0x2)
  }

  private fail (code: number): void {
    this.socket?.destroy()
    this.end(code)
  }

  private end (code: number): void {
    if (this.closed) return
    this.closed = true
    if (this.upgraded) this.handlers.onClose(code)
  }

  /** Drops the connection at once (end of a run). */
  terminate (): void {
    this.closed = true
    this.socket?.destroy()
  }
}
