// The load generator's WebSocket flows (perf/loadgen.ts, protocol
// "websocket") against a real fairway in this process: every message of a
// known schedule is answered and counted once, errors are counted by code
// (a refused upgrade, a forbidden or unknown model), and a connection's 256
// in-flight cap makes the generator queue locally instead of drawing
// FW_ERR_WS_TOO_MANY_INFLIGHT refusals. Counts only; no timing thresholds.

import t from 'tap'
import { runLoad, type FlowSpec, type Scenario } from '../perf/loadgen.js'
import { demoRaw, KEYS, start } from './helpers/server.js'

// Generator worker threads compile their TypeScript under tap's loader, and
// the machine may be shared: allow more than tap's default 30 s per file.
t.setTimeout(120_000)

// One server for every test: the demo platform with acme's limits out of the
// way, so in the last test the per-connection cap is what binds.
const raw = demoRaw()
Object.assign(raw.tenants.acme.limits, { concurrency: 100000, queueDepth: 100000, ratePerSecond: 0, timeoutMs: 60000 })
raw.serviceClasses.heavy.maxQueued = 100000
const { server, url } = await start(raw)
t.teardown(() => server.close())

function wsFlow (over: Partial<FlowSpec>): FlowSpec {
  return { name: 'f', key: KEYS.acme, model: 'tiny-classifier', rows: 1, rate: 100, arrival: 'constant', protocol: 'websocket', encoding: 'msgpack', ...over }
}

function scenario (target: string, flows: FlowSpec[], over: Partial<Scenario> = {}): Scenario {
  // A long timeout: on a loaded machine a late answer must not turn into a transport error.
  return { target, duration_s: 1, warmup_s: 0, threads: 1, seed: 5, timeout_ms: 60000, flows, ...over }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

t.test('a websocket flow at a known rate: every message answered once, histogram agrees', async (t) => {
  const rate = 200
  const r = await runLoad(scenario(url, [
    wsFlow({ name: 'mp', rate }),
    wsFlow({ name: 'json', rate: 100, encoding: 'json', connections: 2 }),
  ], { threads: 2 }), { progress: false })
  const [mp, json] = r.flows
  if (mp === undefined || json === undefined) { t.fail('missing flows'); return }
  t.ok(Math.abs(mp.intended - rate) <= 1, `intended ${mp.intended} = rate x 1 s`)
  t.ok(Math.abs(json.intended - 100) <= 1, `intended ${json.intended} = rate x 1 s`)
  for (const f of [mp, json]) {
    t.equal(f.sent, f.intended, `${f.name}: every intended message sent`)
    t.equal(f.ok, f.sent, `${f.name}: every message answered with outputs`)
    t.same(f.status, { 200: f.sent }, `${f.name}: no error replies`)
    t.equal(f.errors, 0)
    t.equal(f.latency_us.count, f.ok, `${f.name}: one latency per answered message`)
    t.equal(f.service_us.count, f.ok)
    t.equal(f.protocol, 'websocket')
    // No warmup: the timeline's 2xx over all seconds are exactly the measured ones.
    const series = r.timeline.flows.find((s) => s.name === f.name)
    t.equal(sum(series?.ok ?? []), f.ok, `${f.name}: per-second throughput adds up to the 2xx count`)
  }
  t.equal(mp.connections, 4, 'websocket default: 4 connections per thread')
  t.equal(json.connections, 2)
})

t.test('errors are counted per message by code', async (t) => {
  const r = await runLoad(scenario(url, [
    wsFlow({ name: 'bad-key', key: 'fw_nobody', rate: 50 }),
    wsFlow({ name: 'forbidden', key: KEYS.initech, model: 'ranker', rate: 50, encoding: 'json' }),
    wsFlow({ name: 'unknown', model: 'no-such-model', input_name: 'input', input_dim: 4, rate: 50 }),
  ]), { progress: false })
  const byName = new Map(r.flows.map((f) => [f.name, f]))
  const expect: Array<[string, string, number]> = [
    ['bad-key', 'FW_ERR_AUTH_INVALID', 401],
    ['forbidden', 'FW_ERR_MODEL_FORBIDDEN', 403],
    ['unknown', 'FW_ERR_MODEL_NOT_FOUND', 404],
  ]
  for (const [name, code, status] of expect) {
    const f = byName.get(name)
    if (f === undefined) { t.fail(`no flow ${name}`); continue }
    t.ok(f.intended > 0)
    t.equal(f.ok, 0, `${name}: nothing served`)
    t.same(f.error_codes, { [code]: f.intended }, `${name}: every message counted as ${code}`)
    t.same(f.status, { [status]: f.intended }, `${name}: with its HTTP status ${status}`)
    t.equal(f.errors, f.intended)
    t.equal(f.error_latency_us.count, f.intended, `${name}: one error latency per message`)
    t.equal(f.latency_us.count, 0)
  }
})

t.test('past 256 in flight on a connection, messages wait in the generator and are all served', async (t) => {
  // 600 heavy-encoder messages (~1.7 ms of work each) offered within 30 ms
  // on one connection, far faster than the single heavy worker serves them.
  const r = await runLoad(scenario(url, [wsFlow({ name: 'heavy', model: 'heavy-encoder', rate: 20000, connections: 1 })], { duration_s: 0.03 }), { progress: false })
  const f = r.flows[0]
  if (f === undefined) { t.fail('no flow'); return }
  t.ok(f.local_waits > 0, `${f.local_waits} of ${f.sent} messages waited for a free slot`)
  t.equal(f.error_codes.FW_ERR_WS_TOO_MANY_INFLIGHT, undefined, 'the server never refused one for the cap')
  t.equal(f.ok, f.intended, 'every message served')
  t.equal(f.latency_us.count, f.ok)
})
