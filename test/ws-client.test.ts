// The load generator's WebSocket client (perf/ws-client.ts) against a raw TCP
// server that speaks the frames itself: its own frames are valid masked
// client frames; server frames split at every byte, a 16-bit length, a
// fragmented message, a ping (answered with a pong) and a close code all
// come through; a refused upgrade reports status and error code.

import t from 'tap'
import { createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { WsConnection } from '../perf/ws-client.js'

/** A server frame (unmasked). */
function frame (opcode: number, payload: Buffer, fin = true): Buffer {
  const n = payload.length
  const head = n < 126 ? Buffer.from([(fin ? 0x80 : 0) | opcode, n]) : Buffer.from([(fin ? 0x80 : 0) | opcode, 126, n >> 8, n & 0xff])
  return Buffer.concat([head, payload])
}

/** Client frames the server received: [opcode, unmasked payload]. */
function parseClientFrames (buf: Buffer): Array<[number, string]> {
  const out: Array<[number, string]> = []
  let at = 0
  while (at + 2 <= buf.length) {
    const masked = ((buf[at + 1] as number) & 0x80) !== 0
    let len = (buf[at + 1] as number) & 0x7f
    let p = at + 2
    if (len === 126) { len = buf.readUInt16BE(p); p += 2 }
    if (!masked) throw new Error('client frame not masked')
    const key = buf.subarray(p, p + 4)
    p += 4
    const payload = Buffer.from(buf.subarray(p, p + len).map((b, i) => b ^ (key[i % 4] as number)))
    out.push([(buf[at] as number) & 0x0f, payload.toString('latin1')])
    at = p + len
  }
  return out
}

async function rawServer (onUpgraded: (s: Socket, received: () => Buffer) => void, reply = 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n'): Promise<{ url: string, close: () => void }> {
  const sockets: Socket[] = []
  const server = createServer((s) => {
    sockets.push(s)
    let buf = Buffer.alloc(0)
    let upgraded = false
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        buf = buf.subarray(end + 4)
        upgraded = true
        s.write(reply)
        onUpgraded(s, () => buf)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/v2/ws`, close: () => { for (const s of sockets) s.destroy(); server.close() } }
}

t.test('frames both ways: split, 16-bit length, fragments, ping/pong, close code', async (t) => {
  const messages: Array<[string, boolean]> = []
  let closed = -1
  let serverSide: (() => Buffer) | null = null
  const big = 'x'.repeat(300)
  const srv = await rawServer((s, received) => {
    serverSide = received
    const all = Buffer.concat([
      frame(0x1, Buffer.from('{"id":"a"}')),
      frame(0x9, Buffer.from('hb')),
      frame(0x2, Buffer.from(big)),
      frame(0x2, Buffer.from('frag1-'), false),
      frame(0x0, Buffer.from('frag2'), true),
      frame(0x8, Buffer.from([0x03, 0xe9])), // 1001
    ])
    let i = 0
    const next = (): void => { if (i < all.length && !s.destroyed) { s.write(all.subarray(i, ++i)); setImmediate(next) } }
    setImmediate(next)
  })
  t.teardown(srv.close)
  const done = new Promise<void>((resolve) => {
    const c = new WsConnection({ onMessage: (d, binary) => { messages.push([d.toString('latin1'), binary]) }, onClose: (code) => { closed = code; resolve() } })
    void c.open(srv.url, { authorization: 'Bearer k' }).then((refused) => {
      t.equal(refused, null, 'upgraded')
      c.send(Buffer.from('hello'), false)
      c.send(Buffer.from(big), true)
    })
  })
  await done
  t.same(messages, [['{"id":"a"}', false], [big, true], ['frag1-frag2', true]], 'every message whole, with its type')
  t.equal(closed, 1001, 'the server\'s close code')
  // Until the server has the client's answer to its close (frames arrive in order).
  const frames = (): Array<[number, string]> => parseClientFrames((serverSide as (() => Buffer) | null)?.() ?? Buffer.alloc(0))
  while (!frames().some(([op]) => op === 0x8)) await new Promise((resolve) => setImmediate(resolve))
  const got = frames()
  t.same(got.slice(0, 2), [[0x1, 'hello'], [0x2, big]], 'client frames are masked and carry the payload')
  t.ok(got.some(([op, p]) => op === 0xa && p === 'hb'), `the ping was answered with a pong (${JSON.stringify(got.map(([op, p]) => [op, p.length]))})`)
})

t.test('a refused upgrade reports its status and fairway error code', async (t) => {
  const srv = await rawServer(() => {}, 'HTTP/1.1 401 Unauthorized\r\nx-fairway-error-code: FW_ERR_AUTH_INVALID\r\ncontent-length: 0\r\n\r\n')
  t.teardown(srv.close)
  let closes = 0
  const c = new WsConnection({ onMessage: () => {}, onClose: () => { closes++ } })
  t.same(await c.open(srv.url, {}), { status: 401, code: 'FW_ERR_AUTH_INVALID' })
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(closes, 0, 'a connection that never opened reports no close')
})
