// Admission seed, pinning, GPU-class errors and graceful shutdown, on a real
// server and a real CLI process.

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { getPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'node:net'
import { Reject } from '../src/admission/admission-table.js'
import { loadAffinity } from '../src/runtime/affinity.js'
import { call, demoRaw, inferBody, KEYS, ROOT, start } from './helpers/server.js'
import { sampleInput } from './helpers/reference.js'

t.test('a tenant over its concurrency cap gets 429 at once, and slots come back', async (t) => {
  const raw = demoRaw()
  raw.tenants.initech.limits.concurrency = 1
  const { server, url } = await start(raw)
  t.teardown(() => server.close())
  const initech = server.registry.tenantById('initech')
  if (initech === undefined) throw new Error('no initech')
  const body = inferBody('input', 1, 64, sampleInput(64, 1, 3))
  // Occupy the only slot as another gateway thread would (the table is shared memory).
  const classSlot = server.registry.classSlots.get('shared') ?? -1
  t.equal(server.admission.admit(initech.slot, classSlot, server.admission.nowUs()), Reject.None)
  const over = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.initech, body })
  t.equal(over.status, 429)
  t.equal(over.json.code, 'FW_ERR_ADMISSION_TENANT_CONCURRENCY')
  t.equal(server.admission.rejected(initech.slot, Reject.TenantConcurrency), 1)
  t.equal(over.headers.get('x-fairway-reject-reason'), 'tenant_concurrency')
  t.ok(Number(over.headers.get('retry-after')) >= 1, 'Retry-After header')
  const other = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.globex, body })
  t.equal(other.status, 200, 'another tenant is unaffected')
  server.admission.dequeued(initech.slot, classSlot)
  server.admission.release(initech.slot)
  const ok = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.initech, body })
  t.equal(ok.status, 200)

  // A burst: every request is either served or refused with 429, never lost,
  // and every admitted one gives its slot back.
  const replies = await Promise.all(Array.from({ length: 40 }, () => call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.initech, body })))
  const statuses = new Set(replies.map((r) => r.status))
  t.ok([...statuses].every((s) => s === 200 || s === 429), `only 200/429 (${[...statuses].join(',')})`)
  t.ok(replies.some((r) => r.status === 200))
  for (const tn of server.registry.tenants) {
    t.equal(server.admission.inflight(tn.slot), 0, `${tn.config.id}: in-flight back to 0`)
    t.equal(server.admission.queued(tn.slot), 0, `${tn.config.id}: queued back to 0`)
  }
})

t.test('chaos: clients vanishing mid-body and mid-inference leave every counter at zero', async (t) => {
  const { server, url } = await start()
  t.teardown(() => server.close())
  const port = server.port
  const half = JSON.stringify(inferBody('input', 1, 64, sampleInput(64, 1, 9))).slice(0, 100)
  // 20 clients send headers and half a body, then disconnect.
  await Promise.all(Array.from({ length: 20 }, () => new Promise<void>((resolve) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(`POST /v2/models/tiny-classifier/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.acme}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n${half}`)
      setTimeout(() => { sock.destroy(); resolve() }, 20)
    })
  })))
  // 10 clients whose heavy requests are queued or running when they abort.
  const aborts = Array.from({ length: 10 }, async () => {
    const ac = new AbortController()
    const p = fetch(`${url}/v2/models/heavy-encoder/infer`, { method: 'POST', signal: ac.signal, headers: { authorization: `Bearer ${KEYS.acme}`, 'content-type': 'application/json' }, body: JSON.stringify(inferBody('input', 8, 128, sampleInput(128, 8, 3))) })
    setTimeout(() => { ac.abort() }, 5)
    await p.catch(() => undefined)
  })
  await Promise.all(aborts)
  // Let the aborted-but-queued work finish and the disconnects be noticed.
  for (let i = 0; i < 1500 && server.admission.totalInflight() > 0; i++) await new Promise((r) => setTimeout(r, 20))
  for (const tn of server.registry.tenants) {
    t.equal(server.admission.inflight(tn.slot), 0, `${tn.config.id}: in flight 0`)
    t.equal(server.admission.queued(tn.slot), 0, `${tn.config.id}: queued 0`)
  }
  const ok = await call(url, '/v2/models/tiny-classifier/infer', { key: KEYS.acme, body: inferBody('input', 1, 64, sampleInput(64, 1, 1)) })
  t.equal(ok.status, 200, 'still serving')

})

t.test('workers are pinned to their class CPU set and run at their class nice value', async (t) => {
  t.ok(loadAffinity() !== null, 'the native addon is built')
  const { server } = await start()
  t.teardown(() => server.close())
  const byClass = new Map([...server.schedulers.values()].map((s) => [s.pool.serviceClass.id, s.pool.serviceClass.cpus]))
  t.equal(server.workers.length, 5)
  for (const w of server.workers) t.same(w.affinity, byClass.get(w.classId), `${w.classId} worker pinned to ${JSON.stringify(byClass.get(w.classId))}`)
  // The demo's heavy class runs at nice 10, the others at the process's own
  // nice (0 unless the tests themselves run niced).
  const base = getPriority()
  for (const w of server.workers) t.equal(w.nice, w.classId === 'heavy' ? Math.max(10, base) : base, `${w.classId} worker runs at nice ${w.nice}`)
})

t.test('a GPU class fails to start with a clear error where CUDA is absent', async (t) => {
  const raw = demoRaw()
  raw.serviceClasses.heavy.device = 'cuda'
  raw.serviceClasses.heavy.deviceId = 0
  await t.rejects(start(raw), { code: 'FW_ERR_RUNTIME_PROVIDER_UNAVAILABLE', message: /CUDA device 0/ })
})

t.test('SIGTERM drains in-flight requests, flushes their cost events, closes the socket and exits 0', async (t) => {
  // The demo platform with its cost store in a scratch directory.
  const dir = mkdtempSync(join(tmpdir(), 'fairway-life-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const raw = demoRaw()
  raw.modelRepository = join(ROOT, 'models')
  raw.cost = { dataDir: join(dir, 'chdb'), spoolDir: join(dir, 'spool') }
  const configFile = join(dir, 'platform.json')
  writeFileSync(configFile, JSON.stringify(raw))
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'fairway.js'), 'start', '--config', configFile, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out)
      if (m !== null) resolve(Number(m[1]))
    })
    child.on('exit', (c) => { reject(new Error(`exited ${c}: ${out}`)) })
  })
  const url = `http://127.0.0.1:${port}`
  // A second server on the same port is refused, not let in beside it
  // (uWS's default SO_REUSEPORT would split the connections between them).
  const second = { ...demoRaw(), modelRepository: join(ROOT, 'models'), cost: { enabled: false } }
  writeFileSync(join(dir, 'second.json'), JSON.stringify(second))
  const clash = spawnSync(process.execPath, [join(ROOT, 'bin', 'fairway.js'), 'start', '--config', join(dir, 'second.json'), '--port', String(port)], { encoding: 'utf8', timeout: 60_000 })
  t.equal(clash.status, 1, 'a second server on the port exits 1')
  t.match(clash.stderr, /FW_ERR_SERVER_LISTEN/)
  const body = inferBody('input', 8, 128, sampleInput(128, 8, 1))
  // 32 full batches (under acme's concurrency 64 and heavy's maxQueued 64):
  // with 12, all were once answered before the /metrics poll saw them admitted.
  const N = 32
  let answered = 0
  const inflight = Array.from({ length: N }, async () => { const r = await call(url, '/v2/models/heavy-encoder/infer', { key: KEYS.acme, body }); answered++; return r })
  // SIGTERM only once all N are admitted (a counter: it cannot be
  // missed), not after a fixed sleep: a request the child parses after
  // SIGTERM is refused as draining, and a descheduled test process sent the
  // signal before its requests were written. N batches on heavy's one
  // worker keep most of them in flight well past that.
  for (;;) {
    const m = await call(url, '/metrics', { key: 'fw_demo_admin' })
    const admitted = Number(/fairway_tenant_admitted_total\{tenant="acme"[^}]*\} (\d+)/.exec(String(m.json))?.[1] ?? 0)
    if (admitted >= N) break
    await new Promise((r) => setTimeout(r, 2))
  }
  const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => { resolve(c) }))
  const answeredBefore = answered
  child.kill('SIGTERM')
  // An impatient second signal must not cut the drain short. (Sent at once:
  // the drain has dozens of batches to finish, the signal must land in it.)
  child.kill('SIGINT')
  t.ok(answeredBefore < N, `premise: ${N - answeredBefore} request(s) still in flight at SIGTERM`)
  const replies = await Promise.all(inflight)
  t.same(replies.map((r) => r.status), Array(N).fill(200), 'every in-flight request finished')
  t.equal(await exited, 0, 'exit code 0')
  t.match(out, /draining[\s\S]*stopped/)
  t.match(out, /already draining/, 'the second signal was noted, not obeyed')
  await t.rejects(fetch(`${url}/v2/health/live`), 'listen socket closed')
  // The store is free once the server has exited: every event is in it.
  const sql = spawnSync(process.execPath, [join(ROOT, 'bin', 'fairway.js'), 'sql', "SELECT count() AS n FROM cost_events WHERE status = 'ok'", '--format', 'csv', '--data-dir', join(dir, 'chdb')], { encoding: 'utf8', timeout: 60_000 })
  t.equal(sql.status, 0, sql.stderr)
  t.match(sql.stdout, new RegExp(`^"?n"?\\n${N}\\n`), 'every drained request was billed before exit')
})
