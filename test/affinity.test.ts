import t from 'tap'
import { once } from 'node:events'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { Worker } from 'node:worker_threads'
import { affinityLoadError, loadAffinity, packageRoot } from '../src/runtime/affinity.js'

interface Report { tid: number; before: number[]; after: number[] }

// CommonJS eval worker: loads the addon by absolute path and pins itself.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const b = require(workerData.addon)
const before = b.getThreadAffinity()
b.setThreadAffinity([workerData.cpu])
parentPort.postMessage({ tid: b.threadId(), before, after: b.getThreadAffinity() })
`

async function pinnedWorker(addon: string, cpu: number): Promise<Report> {
  const w = new Worker(WORKER, { eval: true, workerData: { addon, cpu } })
  const [report] = (await once(w, 'message')) as [Report]
  await w.terminate()
  return report
}

const binding = loadAffinity()

if (process.platform !== 'linux') {
  t.plan(0, 'thread affinity is Linux-only')
} else if (binding === null) {
  t.fail(`addon did not load: ${affinityLoadError()}`)
} else {
  const addon = join(packageRoot(), 'native-bindings', 'build', 'Release', 'fairway_native.node')

  t.test('pins a worker thread, main thread unchanged', async (t) => {
    const main = binding.getThreadAffinity()
    t.ok(main.length > 0, `main thread allowed CPUs: ${main.join(',')}`)
    t.equal(loadAffinity(), binding, 'loader caches the binding')
    t.equal(affinityLoadError(), null)

    // CPU 0 on a normal machine; the first allowed CPU if we are confined.
    const first = main[0]!
    const last = main[main.length - 1]!
    // Two workers at once: the addon must load in several threads (context-aware).
    const [a, b] = await Promise.all([pinnedWorker(addon, first), pinnedWorker(addon, last)])

    t.same(a.before, main, 'a new worker inherits the main thread mask')
    t.same(a.after, [first], `worker pinned to CPU ${first}`)
    t.same(b.after, [last], `worker pinned to CPU ${last}`)
    t.not(a.tid, binding.threadId(), 'worker has its own kernel thread id')
    t.not(a.tid, b.tid)
    t.same(binding.getThreadAffinity(), main, 'main thread affinity unchanged')
  })

  t.test('bad input throws TypeError', async (t) => {
    const set = binding.setThreadAffinity as (cpus: unknown) => void
    for (const bad of [undefined, 0, '0', {}, [], [1.5], [-1], [1024], [Number.NaN], ['0'], [0, null]]) {
      t.throws(() => set(bad), TypeError, `rejects ${inspect(bad)}`)
    }
  })

  t.test('non-existent CPU throws and leaves affinity unchanged', async (t) => {
    const main = binding.getThreadAffinity()
    t.throws(() => binding.setThreadAffinity([1000]), { name: 'Error', message: /pthread_setaffinity_np failed: Invalid argument/ })
    // The kernel would silently drop 1000 here and keep CPU 0; the addon refuses instead.
    t.throws(() => binding.setThreadAffinity([main[0]!, 1000]), { name: 'Error', message: /offline or not allowed/ })
    t.same(binding.getThreadAffinity(), main)
  })

  t.test('thread CPU time counts this thread\'s work, not sleeping', async (t) => {
    const c0 = binding.threadCpuTimeNs()
    await new Promise((r) => setTimeout(r, 50))
    const slept = binding.threadCpuTimeNs() - c0
    const c1 = binding.threadCpuTimeNs()
    let x = 0
    for (let i = 0; i < 2e7; i++) x += i % 7
    const busy = binding.threadCpuTimeNs() - c1
    t.ok(x > 0)
    t.ok(busy > 5 * slept, `a busy loop (${(busy / 1e6).toFixed(1)} ms CPU) counts, a 50 ms sleep (${(slept / 1e6).toFixed(1)} ms CPU) barely does`)
  })
}

if (process.platform === 'linux' && loadAffinity() !== null) {
  const addon = join(packageRoot(), 'native-bindings', 'build', 'Release', 'fairway_native.node')
  t.test('nice is per thread: a worker raises its own, the main thread keeps its', async (t) => {
    const binding = loadAffinity()
    if (binding === null) return
    const before = binding.getThreadNice()
    const w = new Worker(`
      const { parentPort, workerData } = require('node:worker_threads')
      const b = require(workerData.addon)
      const start = b.getThreadNice()
      b.setThreadNice(start + 3 > 19 ? 19 : start + 3)
      const after = b.getThreadNice()
      let refused = ''
      try { b.setThreadNice(-20) } catch (e) { refused = e.message }
      parentPort.postMessage({ start, after, refused, bad: (() => { try { b.setThreadNice(40); return '' } catch (e) { return e.name } })() })
    `, { eval: true, workerData: { addon } })
    const [r] = (await once(w, 'message')) as [{ start: number, after: number, refused: string, bad: string }]
    await w.terminate()
    t.equal(r.start, before, 'a new thread starts at the process nice value')
    t.equal(r.after, Math.min(19, before + 3), 'the worker raised its own nice value')
    if (process.getuid?.() !== 0) t.match(r.refused, /setpriority failed/, 'lowering it without privilege is refused with the errno')
    t.equal(r.bad, 'TypeError', 'out-of-range values are a TypeError')
    t.equal(binding.getThreadNice(), before, 'main thread nice unchanged')
  })
}
