// server.backgroundNice: once a server runs, every thread of the process but
// the gateway thread and the inference workers ("fw:<class>") is reniced;
// threads already nicer stay so. Checked on the real process's threads
// through /proc, with threads of known names started here.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { getPriority } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { loadAffinity, packageRoot } from '../src/runtime/affinity.js'
import { configFrom, demoRaw, start } from './helpers/server.js'

const BG = 7

function threads (): Array<{ tid: number, comm: string, nice: number }> {
  const out = []
  for (const name of readdirSync('/proc/self/task')) {
    try {
      const comm = readFileSync(`/proc/self/task/${name}/comm`, 'utf8').trim()
      out.push({ tid: Number(name), comm, nice: getPriority(Number(name)) })
    } catch {
      // exited meanwhile
    }
  }
  return out
}

/** A worker thread that names itself, optionally sets its nice value, reports its tid and stays alive. */
async function thread (name: string | null, nice: number | null): Promise<{ w: Worker, tid: number }> {
  const addon = join(packageRoot(), 'native-bindings', 'build', 'Release', 'fairway_native.node')
  const w = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads')
    const b = require(workerData.addon)
    if (workerData.name !== null) b.setThreadName(workerData.name)
    if (workerData.nice !== null) b.setThreadNice(workerData.nice)
    parentPort.postMessage(b.threadId())
    setInterval(() => {}, 1000)
  `, { eval: true, workerData: { addon, name, nice } })
  const tid = await new Promise<number>((resolve) => w.once('message', resolve))
  return { w, tid }
}

t.test('backgroundNice must be an integer 0..19', async (t) => {
  for (const bad of [20, -1, 1.5, 'x']) {
    const raw = demoRaw()
    raw.server = { ...raw.server, backgroundNice: bad }
    t.throws(() => configFrom(raw), /backgroundNice/, `rejects ${String(bad)}`)
  }
  t.equal(configFrom(demoRaw()).server.backgroundNice, 10, 'default 10')
})

if (process.platform === 'linux' && loadAffinity() !== null) {
  t.test('a running server renices every thread but the gateway and the workers', async (t) => {
    const mainNice = getPriority(process.pid)
    t.ok(mainNice < BG, `premise: the test process runs below nice ${BG} (at ${mainNice})`)
    const plain = await thread(null, null)
    const named = await thread('fw:probe', null)
    const nicer = await thread(null, 12)
    t.teardown(async () => { await Promise.all([plain.w.terminate(), named.w.terminate(), nicer.w.terminate()]) })
    t.equal(getPriority(plain.tid), mainNice, 'premise: a new thread starts at the process nice value')

    const raw = demoRaw()
    raw.server = { ...raw.server, backgroundNice: BG }
    const { server } = await start(raw)
    t.teardown(async () => { await server.close() })

    // The sweep runs every second and renices a thread on its second sighting.
    let left: Array<{ tid: number, comm: string, nice: number }> = []
    for (let i = 0; i < 100; i++) {
      left = threads().filter((x) => x.tid !== process.pid && !x.comm.startsWith('fw:') && x.tid !== nicer.tid && x.nice !== BG)
      if (left.length === 0) break
      await new Promise((r) => setTimeout(r, 200))
    }
    t.same(left, [], 'every background thread is at the configured nice value')
    t.equal(getPriority(plain.tid), BG, 'an unnamed thread started before the server was reniced')
    t.equal(getPriority(named.tid), mainNice, 'a thread named fw:* is left alone')
    t.equal(getPriority(nicer.tid), 12, 'a thread already nicer keeps its value')
    t.equal(getPriority(process.pid), mainNice, 'the gateway (main) thread is left alone')

    const workers = threads().filter((x) => x.comm.startsWith('fw:') && x.tid !== named.tid)
    const classes = new Set(workers.map((x) => x.comm.slice(3)))
    t.ok(classes.has('shared') && classes.has('heavy'), `workers named by class (${[...classes].join(', ')})`)
    // Workers only ever raise their nice value to the class's (the demo's heavy class: 10).
    for (const w of workers) t.equal(w.nice, Math.max(mainNice, w.comm === 'fw:heavy' ? 10 : 0), `${w.comm} keeps its class nice value`)

    // A thread started after the server is reniced too.
    const late = await thread(null, null)
    t.teardown(async () => { await late.w.terminate() })
    for (let i = 0; i < 100 && getPriority(late.tid) !== BG; i++) await new Promise((r) => setTimeout(r, 200))
    t.equal(getPriority(late.tid), BG, 'a thread started later is reniced by a later sweep')
  })
}
