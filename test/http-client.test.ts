// The load generator's HTTP/1.1 client (perf/http-client.ts) against a raw
// TCP server that writes scripted responses: split at every byte, chunked
// bodies, an interim 100, fairway's error-code header, `connection: close`,
// a server that closes without answering, and more requests than
// connections (they wait, in order).

import t from 'tap'
import { createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { encodePost, HttpClient } from '../perf/http-client.js'

interface Outcome { status: number, code: string, error: string | null, wired: boolean }

/** A server whose reply to each request (in arrival order) is `replies[n]`; null closes the socket unanswered. */
async function scripted (replies: Array<string | null>, opts: { bytewise?: boolean } = {}): Promise<{ url: string, requests: () => number, close: () => Promise<void> }> {
  let n = 0
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    let buf = ''
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      // Each request of the tests is one head + a small body with content-length.
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0)
        if (buf.length < end + 4 + len) return
        buf = buf.slice(end + 4 + len)
        const reply = replies[n++] ?? null
        if (reply === null) { s.destroy(); return }
        if (opts.bytewise === true) {
          // One byte per write, each on its own tick: responses arrive split everywhere.
          const bytes = Buffer.from(reply, 'latin1')
          let i = 0
          const next = (): void => { if (i < bytes.length && !s.destroyed) { s.write(bytes.subarray(i, ++i)); setImmediate(next) } }
          next()
        } else {
          s.write(reply)
        }
      }
    })
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    requests: () => n,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

function send (client: HttpClient, url: string): Promise<Outcome> {
  const host = new URL(url).host
  return new Promise((resolve) => {
    let wired = false
    client.send(encodePost(host, '/v2/models/m/infer', { 'content-type': 'application/json' }, '{"inputs":[]}'), {
      onWire: () => { wired = true },
      onResponse: (status, code) => { resolve({ status, code, error: null, wired }) },
      onError: (error) => { resolve({ status: 0, code: '', error, wired }) },
    })
  })
}

const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n${extra}content-length: ${body.length}\r\n\r\n${body}`
const chunked = (parts: string[]): string => `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${parts.map((p) => `${p.length.toString(16)}\r\n${p}\r\n`).join('')}0\r\n\r\n`
const refused = 'HTTP/1.1 429 Too Many Requests\r\nx-fairway-error-code: FW_ERR_ADMISSION_TENANT_RATE\r\ncontent-length: 2\r\n\r\n{}'

t.test('responses split at every byte, chunked or not, interim 100, error codes: each request gets its own answer', async (t) => {
  const replies = [ok('{"a":1}'), chunked(['{"outputs"', ':[1,2,3]}']), `HTTP/1.1 100 Continue\r\n\r\n${ok('{}')}`, refused, ok('')]
  const srv = await scripted(replies, { bytewise: true })
  t.teardown(srv.close)
  const client = new HttpClient(srv.url, 1)
  await client.open()
  t.teardown(() => { client.close() })
  const got: Outcome[] = []
  for (let i = 0; i < replies.length; i++) got.push(await send(client, srv.url))
  t.same(got.map((o) => [o.status, o.code, o.error]), [[200, '', null], [200, '', null], [200, '', null], [429, 'FW_ERR_ADMISSION_TENANT_RATE', null], [200, '', null]])
  t.ok(got.every((o) => o.wired), 'every request was reported written')
})

t.test('more requests than connections wait in order; connection: close and an unanswered close are handled', async (t) => {
  // Request 2 is answered with connection: close (the client must reopen for
  // the next one), request 4 is dropped without an answer.
  const srv = await scripted([ok('1'), ok('2', 'connection: close\r\n'), ok('3'), null, ok('5'), ok('6')])
  t.teardown(srv.close)
  const client = new HttpClient(srv.url, 1)
  await client.open()
  t.teardown(() => { client.close() })
  const got = await Promise.all(Array.from({ length: 6 }, async () => await send(client, srv.url)))
  t.same(got.map((o) => o.status), [200, 200, 200, 0, 200, 200], 'answers in send order on one connection')
  t.equal(got[3]?.error, 'socket_closed', 'the unanswered request fails with the close, not with the next reply')
  t.equal(srv.requests(), 6, 'the server saw every request once')
})

t.test('abandon(): a timed-out request is forgotten, waiting or on the wire, and the next one gets its own reply', async (t) => {
  // The first request is never answered (the server holds it); the second waits behind it.
  let held: Socket | null = null
  const server = createServer((s) => {
    let n = 0
    s.on('data', () => {
      n++
      if (held === null) held = s
      else s.write(ok(`r${n}`))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(() => { server.close() })
  const client = new HttpClient(url, 1)
  await client.open()
  t.teardown(() => { client.close() })
  const host = new URL(url).host
  const req = encodePost(host, '/x', {}, '{}')
  const outcomes: string[] = []
  const first = { onWire: () => {}, onResponse: () => { outcomes.push('first answered') }, onError: (e: string) => { outcomes.push(`first ${e}`) } }
  const second = { onWire: () => {}, onResponse: () => { outcomes.push('second answered') }, onError: (e: string) => { outcomes.push(`second ${e}`) } }
  client.send(req, first)
  client.send(req, second)
  client.abandon(second) // still waiting: dropped from the queue
  client.abandon(first) // on the wire: its socket is dropped
  const third = await new Promise<Outcome>((resolve) => {
    client.send(req, { onWire: () => {}, onResponse: (status, code) => { resolve({ status, code, error: null, wired: true }) }, onError: (error) => { resolve({ status: 0, code: '', error, wired: true }) } })
  })
  t.equal(third.status, 200, 'a new request after the abandoned ones is answered on a fresh connection')
  t.same(outcomes, [], 'abandoned requests get no callback')
  ;(held as Socket | null)?.destroy()
})
