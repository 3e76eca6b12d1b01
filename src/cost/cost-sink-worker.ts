// Entry point of the cost sink thread (see cost-sink.ts). Started by
// CostPipeline.start with the SinkInit as workerData.

import { parentPort, workerData } from 'node:worker_threads'
import { loadAffinity } from '../runtime/affinity.js'
import { CostError, errorText } from './cost-error.js'
import { CostSink } from './cost-sink.js'
import type { FromSink, SinkInit, ToSink } from './sink-protocol.js'

const port = parentPort
if (port === null) throw new Error('cost-sink-worker.js must run as a worker thread')

// Named so that top -H and /proc/<pid>/task/*/comm tell the sink apart from
// V8's and libuv's threads, which all carry Node's name. Not "fw:": the
// background-nice sweep renices this thread like ClickHouse's. Without the
// addon the thread keeps Node's name; nothing else depends on it.
loadAffinity()?.setThreadName('fw-cost-sink')

const post = (m: FromSink, transfer?: ArrayBuffer[]): void => { port.postMessage(m, transfer) }
const sink = new CostSink(workerData as SinkInit, post)

sink.start().then(() => {
  port.on('message', (m: ToSink) => {
    sink.handle(m)
    if (m.t === 'close') port.unref()
  })
  post({ t: 'ready' })
}, (err: unknown) => {
  post({ t: 'fatal', code: err instanceof CostError ? err.code : 'FW_ERR_COST_BACKEND_UNAVAILABLE', message: errorText(err) })
})
