// The lock-free admission table: each limit on its own, rollback when a later
// check refuses, and no overshoot under concurrent bursts from several threads
// running the compiled module on one shared buffer.

import t from 'tap'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { AdmissionTable, Reject } from '../src/admission/admission-table.js'
import { ROOT } from './helpers/server.js'

const policy = { concurrency: 3, queueDepth: 2, ratePerSecond: 0, burst: 1 }

t.test('concurrency cap, then queue cap, then class shed; each refusal undoes what it took', async (t) => {
  const a = new AdmissionTable(2, 1)
  a.setTenantPolicy(0, policy)
  a.setTenantPolicy(1, { ...policy, concurrency: 10, queueDepth: 10 })
  a.setClassShed(0, 3)
  const now = a.nowUs()
  t.equal(a.admit(0, 0, now), Reject.None)
  t.equal(a.admit(0, 0, now), Reject.None)
  t.equal(a.admit(0, 0, now), Reject.TenantQueueFull, 'two queued is the tenant queue depth')
  a.dequeued(0, 0) // one leaves the queue for a worker: in flight, not queued
  t.equal(a.admit(0, 0, now), Reject.None)
  t.equal(a.admit(0, 0, now), Reject.TenantConcurrency, 'three in flight is the cap')
  t.equal(a.inflight(0), 3)
  t.equal(a.queued(0), 2)
  t.equal(a.admit(1, 0, now), Reject.None)
  t.equal(a.admit(1, 0, now), Reject.ClassOverloaded, 'class holds 3 queued: shed')
  t.equal(a.inflight(1), 1, 'the class refusal gave back the in-flight slot')
  t.equal(a.queued(1), 1, 'and the tenant queue slot')
  t.equal(a.classQueued(0), 3)
  t.equal(a.rejected(0, Reject.TenantQueueFull), 1)
  t.equal(a.rejected(0, Reject.TenantConcurrency), 1)
  t.equal(a.rejected(1, Reject.ClassOverloaded), 1)
})

t.test('rate: GCRA admits the burst, then one per interval, with an exact retry hint', async (t) => {
  const a = new AdmissionTable(1, 1)
  a.setTenantPolicy(0, { concurrency: 1000, queueDepth: 1000, ratePerSecond: 100, burst: 5 })
  a.setClassShed(0, 1000)
  const t0 = a.nowUs()
  let admitted = 0
  for (let i = 0; i < 20; i++) if (a.admit(0, 0, t0) === Reject.None) admitted++
  t.equal(admitted, 5, 'burst of 5 at one instant')
  t.equal(a.rejected(0, Reject.TenantRate), 15)
  t.equal(a.retryAfterUs, 10_000, 'next conforming request in one interval (10 ms)')
  t.equal(a.inflight(0), 5, 'rate refusals leave no in-flight slot behind')
  t.equal(a.queued(0), 5)
  t.equal(a.classQueued(0), 5)
  t.equal(a.admit(0, 0, t0 + 9_999), Reject.TenantRate)
  t.equal(a.admit(0, 0, t0 + 10_000), Reject.None, 'one more after one interval')
  t.equal(a.admit(0, 0, t0 + 10_000), Reject.TenantRate)
  // Over a long window the admitted count converges to rate × time + burst.
  let n = 0
  for (let us = 0; us <= 1_000_000; us += 1000) if (a.admit(0, 0, t0 + 10_000 + us) === Reject.None) n++
  t.equal(n, 100, '100 per second at 1 ms attempts')
})

t.test('rate: an idle tenant banks at most its burst, also across the Int32 clock wrap', async (t) => {
  const a = new AdmissionTable(1, 1)
  a.setTenantPolicy(0, { concurrency: 1e6, queueDepth: 1e6, ratePerSecond: 10, burst: 3 })
  a.setClassShed(0, 1e6)
  const t0 = a.nowUs()
  // 40 minutes later (past the 2^31 µs wrap), with refresh running meanwhile.
  let now = t0
  for (let i = 0; i < 480; i++) { now = (now + 5_000_000) | 0; a.refresh(now) }
  let admitted = 0
  for (let i = 0; i < 10; i++) if (a.admit(0, 0, now) === Reject.None) admitted++
  t.equal(admitted, 3)
})

t.test('several threads bursting on one buffer never overshoot a cap and leave every counter at zero', async (t) => {
  const cap = 4
  const a = new AdmissionTable(1, 1)
  a.setTenantPolicy(0, { concurrency: cap, queueDepth: cap, ratePerSecond: 0, burst: 1 })
  a.setClassShed(0, 1000)
  const probe = new SharedArrayBuffer(8) // [holders, violations]
  const moduleUrl = new URL(`file://${join(ROOT, 'dist', 'src', 'admission', 'admission-table.js')}`).href
  const code = `
    const { workerData, parentPort } = require('node:worker_threads')
    import(workerData.moduleUrl).then(({ AdmissionTable }) => {
      const a = new AdmissionTable(1, 1, workerData.buffer)
      const probe = new Int32Array(workerData.probe)
      let ok = 0, refused = 0
      for (let i = 0; i < 100000; i++) {
        if (a.admit(0, 0, a.nowUs()) !== 0) { refused++; continue }
        ok++
        if (Atomics.add(probe, 0, 1) + 1 > ${cap}) Atomics.add(probe, 1, 1)
        Atomics.sub(probe, 0, 1)
        a.dequeued(0, 0)
        a.release(0)
      }
      parentPort.postMessage({ ok, refused })
    })`
  const results = await Promise.all([0, 1, 2, 3].map(() => new Promise<{ ok: number, refused: number }>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { moduleUrl, buffer: a.buffer, probe } })
    w.once('message', resolve)
    w.once('error', reject)
  })))
  t.equal(new Int32Array(probe)[1], 0, 'never more holders than the cap')
  const ok = results.reduce((s, r) => s + r.ok, 0)
  const refused = results.reduce((s, r) => s + r.refused, 0)
  t.equal(ok + refused, 400_000)
  t.equal(a.admitted(0), ok, 'admitted counter matches')
  t.equal(a.rejected(0, Reject.TenantConcurrency) + a.rejected(0, Reject.TenantQueueFull), refused, 'every refusal counted with a reason')
  t.equal(a.inflight(0), 0)
  t.equal(a.queued(0), 0)
  t.equal(a.classQueued(0), 0)
})
