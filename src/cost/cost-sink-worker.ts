// Entry point of the cost sink thread (see cost-sink.ts). Started by
// CostPipeline.start with the SinkInit as workerData.

import { parentPort, workerData } from 'node:worker_threads'
import { CostError, errorText } from './cost-error.js'
import { CostSink } from './cost-sink.js'
import type { FromSink, SinkInit, ToSink } from './sink-protocol.js'

const port = parentPort
if (port === null) throw new Error('cost-sink-worker.js must run as a worker thread')

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
