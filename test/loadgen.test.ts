// The open-loop load generator (perf/loadgen.ts) against a node:http server in
// this process whose behaviour is known: the arrival schedule it produces,
// that recorded latencies include a known server delay, and that measuring
// from the intended send time exposes a stall that a coordinated-omission-
// prone measurement (from when the request hit the wire) hides.
// Timing bounds are generous sanity bounds; the assertions are about behaviour.

import t from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { encodeIntoCompressedBase64 } from 'hdr-histogram-js'
import { lowSteal, runLoad, validateScenario, type FlowSpec, type GroupResult, type LoadResult, type Sample, type Scenario } from '../perf/loadgen.js'
import { newHistogram } from '../perf/loadgen-common.js'
import { renderHtml } from '../perf/report-html.js'

// Each run starts generator worker threads that compile their TypeScript
// under tap's loader; on a shared machine the file can pass 30 s.
t.setTimeout(120_000)

type Handler = (n: number, req: IncomingMessage, res: ServerResponse) => void

interface TestServer {
  url: string
  /** Epoch ms of every request's arrival (body fully read), in order. */
  arrivals: number[]
  close (): Promise<void>
}

function epochMs (): number {
  return performance.timeOrigin + performance.now()
}

/** A server that reads the body, then lets `handle` answer request number n (1-based). */
async function serve (handle: Handler): Promise<TestServer> {
  const arrivals: number[] = []
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      arrivals.push(epochMs())
      handle(arrivals.length, req, res)
    })
  })
  server.keepAliveTimeout = 30_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrivals,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

function ok (res: ServerResponse, status = 200): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end('{"outputs":[]}')
}

function flow (over: Partial<FlowSpec> = {}): FlowSpec {
  return { name: 'f', model: 'tiny-classifier', rows: 1, rate: 100, arrival: 'constant', protocol: 'http', encoding: 'json', ...over }
}

function scenario (url: string, over: Partial<Scenario>): Scenario {
  return { target: url, duration_s: 2, warmup_s: 0, threads: 1, seed: 42, flows: [flow()], ...over }
}

async function run (s: Scenario, hooks: { onMeasureStart?: () => void, onMeasureEnd?: () => void } = {}): Promise<LoadResult & { samples: Sample[] }> {
  const r = await runLoad(s, { progress: false, collectSamples: 100_000, ...hooks })
  return r as LoadResult & { samples: Sample[] }
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? NaN
}

t.test('constant arrivals: rate x duration requests, evenly spaced, merged across threads', async (t) => {
  const srv = await serve((_n, _req, res) => ok(res))
  t.teardown(() => srv.close())
  const rate = 200
  const r = await run(scenario(srv.url, { duration_s: 2, threads: 2, flows: [flow({ rate })] }))
  const f = r.flows[0]
  t.ok(f !== undefined)
  if (f === undefined) return
  t.ok(Math.abs(f.intended - rate * 2) <= 1, `intended ${f.intended} = rate x duration (${rate * 2})`)
  t.equal(f.sent + f.dropped, f.intended, 'every intended request was sent or counted as dropped')
  t.equal(f.dropped, 0, 'nothing dropped')
  t.equal(f.ok, f.sent, 'every request answered 200')
  t.equal(f.status['200'], f.sent)
  t.equal(srv.arrivals.length, f.sent, 'the server saw exactly the requests the generator counted')
  t.equal(f.offered_rate, rate)
  t.equal(f.latency_us.count, f.ok, 'one latency per 2xx response')
  // Steal (perf/cpu-steal.ts): this suite runs on Linux, where /proc/stat has it.
  t.ok(r.machine_steal_pct !== null && r.machine_steal_pct >= 0 && r.machine_steal_pct <= 100, `steal over the measured period is a percentage (${String(r.machine_steal_pct)})`)
  t.ok(r.timeline.steal_pct.length >= 2 && r.timeline.steal_pct.every((v) => v === null || (v >= 0 && v <= 100)), `steal per second: percentages, one for each of the run's 2 s at least (${r.timeline.steal_pct.length})`)

  // The two threads' schedules interleave into one evenly spaced stream.
  const intended = r.samples.map((s) => s.intendedMs)
  const gaps = intended.slice(1).map((x, i) => x - (intended[i] as number))
  const step = 1000 / rate
  t.ok(gaps.every((g) => Math.abs(g - step) < 0.01), `intended send times are exactly ${step} ms apart`)
  t.ok(r.samples.every((s) => s.sentMs >= s.intendedMs), 'nothing is sent before its intended time')
  const lag = median(r.samples.map((s) => s.sentMs - s.intendedMs))
  t.ok(lag < 20, `median send lag ${lag.toFixed(2)} ms is small (sanity bound 20 ms)`)
  // What the server saw: evenly spaced arrivals (generous bound on jitter).
  const sgaps = srv.arrivals.slice(1).map((x, i) => x - (srv.arrivals[i] as number))
  const sm = median(sgaps)
  t.ok(sm > step * 0.4 && sm < step * 1.6, `median inter-arrival at the server ${sm.toFixed(2)} ms ~ ${step} ms`)
})

t.test('Poisson arrivals: right count, exponential gaps', async (t) => {
  const srv = await serve((_n, _req, res) => ok(res))
  t.teardown(() => srv.close())
  const rate = 300
  const r = await run(scenario(srv.url, { duration_s: 2, threads: 2, flows: [flow({ rate, arrival: 'poisson' })] }))
  const f = r.flows[0]
  if (f === undefined) { t.fail('no flow'); return }
  // 600 expected, sd ~24.5: 5 sd either side.
  t.ok(f.intended > 475 && f.intended < 725, `intended ${f.intended} ~ 600`)
  t.equal(srv.arrivals.length, f.sent)
  const intended = r.samples.map((s) => s.intendedMs)
  const gaps = intended.slice(1).map((x, i) => x - (intended[i] as number))
  const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length
  const sd = Math.sqrt(gaps.reduce((a, b) => a + (b - mean) ** 2, 0) / gaps.length)
  t.ok(mean > 2.5 && mean < 4.3, `mean gap ${mean.toFixed(2)} ms ~ 3.33 ms`)
  t.ok(sd / mean > 0.75 && sd / mean < 1.25, `coefficient of variation ${(sd / mean).toFixed(2)} ~ 1 (exponential), not 0 (constant)`)
})

t.test('phases change the rate; warmup requests are sent but not measured', async (t) => {
  const srv = await serve((_n, _req, res) => ok(res))
  t.teardown(() => srv.close())
  const hooks: Array<[string, number]> = []
  const r = await run(scenario(srv.url, { duration_s: 3, warmup_s: 0.5, flows: [flow({ rate: 100, phases: [{ from_s: 1, to_s: 2, rate: 400 }] })] }), {
    onMeasureStart: () => hooks.push(['start', epochMs()]),
    onMeasureEnd: () => hooks.push(['end', epochMs()]),
  })
  t.same(hooks.map((h) => h[0]), ['start', 'end'], 'measure hooks run once each, in order')
  const span = (hooks[1]?.[1] ?? 0) - (hooks[0]?.[1] ?? 0)
  t.ok(span > 2500 && span < 4000, `hooks ${span.toFixed(0)} ms apart ~ the 3 s measured period`)
  const f = r.flows[0]
  if (f === undefined) { t.fail('no flow'); return }
  t.ok(Math.abs(f.intended - 600) <= 2, `measured intended ${f.intended} = 100 + 400 + 100`)
  t.ok(Math.abs(f.warmup_sent - 50) <= 1, `warmup sent ${f.warmup_sent} = 0.5 s x 100/s`)
  t.equal(srv.arrivals.length, f.sent + f.warmup_sent)
  const start = Math.min(...r.samples.map((s) => s.intendedMs))
  const inPhase = r.samples.filter((s) => s.intendedMs >= start + 1500 && s.intendedMs < start + 2500).length
  t.ok(Math.abs(inPhase - 400) <= 2, `${inPhase} requests intended inside the 400/s phase`)
  t.equal(r.samples.filter((s) => s.measured).length, f.intended)
})

t.test('startAt: runs in parallel share one clock; a start time that passed first fails the run', async (t) => {
  const srv = await serve((_n, _req, res) => ok(res))
  t.teardown(() => srv.close())
  // Generous: under tap's TypeScript loader a generator thread takes seconds to start.
  const startAt = Math.ceil(epochMs()) + 8000
  const opts = { progress: false, collectSamples: 1000, startAt }
  const [a, b] = await Promise.all([
    runLoad(scenario(srv.url, { duration_s: 1, flows: [flow({ name: 'a' })] }), opts),
    runLoad(scenario(srv.url, { duration_s: 1, flows: [flow({ name: 'b', rate: 50 })] }), opts),
  ])
  t.equal(a.timeline.start_epoch_ms, startAt, 'bucket 0 of the first run starts at the given time')
  t.equal(b.timeline.start_epoch_ms, startAt, 'and so does the second\'s')
  t.equal(Math.min(...(a.samples ?? []).map((x) => x.intendedMs)), startAt, 'the first request is intended at the start (constant arrivals)')
  t.equal(Math.min(...(b.samples ?? []).map((x) => x.intendedMs)), startAt)
  await t.rejects(runLoad(scenario(srv.url, { duration_s: 1 }), { progress: false, startAt: epochMs() - 1000 }), /start time passed \d+ ms before the generator threads were ready/)
  const free = await runLoad(scenario(srv.url, { duration_s: 0.5 }), { progress: false })
  t.ok(free.timeline.start_epoch_ms > startAt, 'without startAt a run starts when its threads are ready')
})

t.test('recorded latencies include a known server delay', async (t) => {
  // Requests 51..150 are answered after 20 ms, with status 202 so the
  // generator's per-request samples can be matched to the server's choice.
  const DELAY = 20
  const srv = await serve((n, _req, res) => {
    if (n > 50 && n <= 150) setTimeout(() => ok(res, 202), DELAY)
    else ok(res)
  })
  t.teardown(() => srv.close())
  const r = await run(scenario(srv.url, { duration_s: 2, flows: [flow({ rate: 200 })] }))
  const f = r.flows[0]
  if (f === undefined) { t.fail('no flow'); return }
  t.equal(f.status['202'], 100, '100 delayed responses')
  t.equal(f.status['200'], f.sent - 100)
  const delayed = r.samples.filter((s) => s.status === 202).map((s) => s.latencyUs)
  const prompt = r.samples.filter((s) => s.status === 200).map((s) => s.latencyUs)
  t.equal(delayed.length, 100)
  // setTimeout may fire up to ~1 ms early against performance.now().
  t.ok(delayed.every((us) => us >= (DELAY - 1) * 1000), `every delayed request's latency >= ${DELAY - 1} ms (min ${(Math.min(...delayed) / 1000).toFixed(2)} ms)`)
  t.ok(median(delayed) - median(prompt) > (DELAY - 5) * 1000, `delayed median ${(median(delayed) / 1000).toFixed(1)} ms vs prompt ${(median(prompt) / 1000).toFixed(1)} ms`)
  // A quarter of the requests were delayed: the p90 is a delayed one, and the histogram agrees with the samples.
  t.ok(f.latency_us.p90 >= (DELAY - 1) * 1000, `p90 ${f.latency_us.p90} us includes the delay`)
  t.ok(f.latency_us.max >= DELAY * 1000 * 0.95)
  t.equal(f.latency_us.count, f.sent)
})

t.test('coordinated omission: a 200 ms stall is charged to every request queued behind it', async (t) => {
  // Stop-the-world at request 150: nothing is answered for 200 ms, and
  // everything arriving meanwhile waits for the stall to end.
  const STALL = 200
  const CONNECTIONS = 4
  let stallStart = 0
  let stallEnd = 0
  const srv = await serve((n, _req, res) => {
    const now = epochMs()
    if (n === 150) { stallStart = now; stallEnd = now + STALL }
    if (now < stallEnd) setTimeout(() => ok(res), stallEnd - now)
    else ok(res)
  })
  t.teardown(() => srv.close())
  const rate = 250
  const r = await run(scenario(srv.url, { duration_s: 3, connections: CONNECTIONS, flows: [flow({ rate })] }))
  const f = r.flows[0]
  if (f === undefined) { t.fail('no flow'); return }
  t.ok(stallStart > 0, 'the server stalled')
  t.equal(f.ok, f.sent, 'every request answered')

  const slow = r.samples.filter((s) => s.latencyUs >= 100_000)
  // ~ (STALL - 100 ms) x rate = 25 requests were intended early enough in the stall to wait >= 100 ms.
  t.ok(slow.length >= 10, `${slow.length} requests took >= 100 ms from their intended send time (not just one)`)
  t.ok(f.latency_us.p99 >= 100_000, `p99 ${(f.latency_us.p99 / 1000).toFixed(1)} ms reflects the queue behind the stall`)
  // Every request intended during the first half of the stall waited until its end.
  const queued = r.samples.filter((s) => s.intendedMs >= stallStart && s.intendedMs <= stallEnd - 110)
  t.ok(queued.length >= 10, `${queued.length} requests intended during the stall's first ${STALL - 110} ms`)
  t.ok(queued.every((s) => s.latencyUs >= 100_000), 'each of them has latency >= 100 ms')
  // Waiting for a free connection is part of the latency: measured from when a
  // request was written to a connection (what a closed-loop tool sees), at most
  // one request per connection can have waited that long in the stall (the
  // bound allows as many again for a pause of this process on a loaded
  // machine, and stays well under the requests that really waited).
  const wireSlow = r.samples.filter((s) => s.wireMs > 0 && s.intendedMs + s.latencyUs / 1000 - s.wireMs >= 100).length
  t.ok(wireSlow <= 2 * CONNECTIONS && wireSlow < slow.length / 2, `measured from the wire only ${wireSlow} request(s) look slow (<= 2 x ${CONNECTIONS} connections, against ${slow.length} that waited)`)
  t.ok(f.service_us.p99 < 100_000, `service-time p99 ${(f.service_us.p99 / 1000).toFixed(1)} ms hides the stall; latency p99 does not`)
})

t.test('scenario validation', async (t) => {
  const base = { target: 'http://127.0.0.1:1', duration_s: 1, flows: [flow()] }
  t.doesNotThrow(() => validateScenario(base))
  t.doesNotThrow(() => validateScenario({ ...base, flows: [flow({ protocol: 'websocket', connections: 2 })] }))
  t.throws(() => validateScenario({ ...base, flows: [flow({ connections: 2 })] }), /connections applies to websocket flows only/)
  t.throws(() => validateScenario({ ...base, flows: [flow({ protocol: 'grpc' as 'http' })] }), /protocol must be "http" or "websocket"/)
  t.throws(() => validateScenario({ ...base, flows: [flow({ rate: -1 })] }), /flows\[0\]\.rate/)
  t.throws(() => validateScenario({ ...base, flows: [flow({ phases: [{ from_s: 0, to_s: 2, rate: 1 }, { from_s: 1, to_s: 3, rate: 1 }] })] }), /overlaps/)
  t.throws(() => validateScenario({ ...base, flows: [flow(), flow()] }), /used twice/)
})

t.test('HTML report: self-contained, one <svg> per plot, flow names, the result table', async (t) => {
  // A small synthetic result: two flows of one tenant, three seconds of timeline.
  const hist = (values: number[]): string => {
    const h = newHistogram()
    for (const v of values) h.recordValue(v)
    return encodeIntoCompressedBase64(h)
  }
  const summary = { count: 3, min: 500, mean: 900, p50: 800, p90: 1200, p99: 1500, p999: 1500, max: 1500 }
  const group = (name: string): GroupResult => ({
    name, offered_rate: 100, intended: 300, sent: 300, dropped: 0, responses: 300, ok: 299, warmup_sent: 100, sent_rate: 100, ok_rate: 99.7, throughput: 99.7,
    errors: 1, local_waits: 0, status: { 200: 299, 429: 1 }, error_codes: { FW_ERR_ADMISSION_TENANT_RATE: 1 }, transport_errors: {},
    latency_us: summary, error_latency_us: summary, service_us: summary, send_lag_us: summary, histogram: hist([500, 800, 1500, 40_000]),
  })
  const flowResult = (name: string, protocol: string): LoadResult['flows'][number] => ({ ...group(name), tenant: 'acme', model: 'tiny-classifier', rows: 1, arrival: 'poisson', protocol, encoding: 'msgpack', connections: 4 })
  const target = 'http://127.0.0.1:8000'
  const series = (name: string): LoadResult['timeline']['flows'][number] => ({ name, ok: [90, 100, 99, 1], errors: [0, 0, 1, 0], p50_us: [900, 800, 850, 700], p99_us: [5000, 1500, 1600, 700], max_us: [6000, 1600, 1700, 700] })
  const result: LoadResult = {
    started_at: '2026-11-28T00:00:00.000Z', target, duration_s: 3, warmup_s: 1, threads: 1, connections: 64,
    flows: [flowResult('alpha-http-flow', 'http'), flowResult('beta-ws-flow', 'websocket')],
    tenants: [group('acme')], total: group('total'),
    generator_cpu_ms: { user: 10, system: 5 },
    machine_steal_pct: 12.5,
    low_steal: { threshold_pct: 1, seconds: 1, of: 3, ok: 90, p50_us: 900, p99_us: 5000 },
    timeline: { start_s: -1, start_epoch_ms: 0, flows: [series('alpha-http-flow'), series('beta-ws-flow')], steal_pct: [0, 3, null, 40] },
    scenario: { target, duration_s: 3, flows: [flow({ name: 'alpha-http-flow' }), flow({ name: 'beta-ws-flow', protocol: 'websocket' })] },
  }
  const html = renderHtml(result)
  t.match(html, /^<!doctype html>/)
  t.equal(html.match(/<svg\b/g)?.length, 4, 'one <svg> per plot: distribution, latency over time, throughput over time, steal over time')
  t.equal(html.match(/<\/svg>/g)?.length, 4)
  t.ok(html.includes('Hypervisor steal over the measured period: 12.5%'), 'states the run\'s steal')
  t.ok(html.includes('Over the 1 of 3 measured seconds with steal under 1% (90 responses): p50 0.90 ms, p99 5.00 ms'), 'and the low-steal seconds\' tail')
  // A result without steal figures (off Linux, or written before they were recorded) has no steal plot.
  const bare = renderHtml({ ...result, machine_steal_pct: null, low_steal: null, timeline: { ...result.timeline, steal_pct: [null, null] } })
  t.equal(bare.match(/<svg\b/g)?.length, 3, 'no steal plot without figures')
  t.ok(bare.includes('No steal figures') && !bare.includes('Hypervisor steal over the measured period'), 'and says so')
  for (const name of ['alpha-http-flow', 'beta-ws-flow', 'tenant acme']) t.ok(html.includes(name), `names ${name}`)
  t.ok(html.includes('FW_ERR_ADMISSION_TENANT_RATE x1'), 'the result table lists errors by code')
  t.ok(html.includes('<table>'), 'has the result table')
  // Self-contained: no script, stylesheet link or remote resource; the only
  // URL in the page is the target, shown as text.
  t.notOk(/<script|<link|<img|<iframe|@import|url\(/i.test(html), 'no script, link, image, frame, import or url()')
  t.notOk(/(src|href)\s*=/i.test(html), 'no src or href attributes')
  t.notOk(/https?:\/\//.test(html.split(target).join('')), 'no http(s):// anywhere but the target text')
})

t.test('low-steal seconds: only measured seconds under 1% steal, every flow and thread merged', async (t) => {
  const hist = (v: number, n: number): string => {
    const h = newHistogram()
    for (let i = 0; i < n; i++) h.recordValue(v)
    return encodeIntoCompressedBase64(h)
  }
  // Buckets 0 (warmup), 1, 2, 3; two parts (threads or flows). Second 2 is
  // slow and stolen; seconds 1 and 3 are quiet; second 0 is quiet but warmup.
  const part = (slow: number): { ok: number[], errors: number[], latency: string[] } =>
    ({ ok: [10, 100, 100, 100], errors: [0, 0, 0, 0], latency: [hist(90_000, 10), hist(1000, 100), hist(slow, 100), hist(2000, 100)] })
  const steal = [0, 0.5, 30, 0.9]
  const low = lowSteal([part(50_000), part(60_000)], steal, 1, 4)
  t.ok(low !== null)
  if (low === null) return
  t.equal(low.seconds, 2, 'seconds 1 and 3')
  t.equal(low.of, 3)
  t.equal(low.ok, 400, 'both parts of both quiet seconds')
  t.ok(low.p99_us >= 1990 && low.p99_us <= 2010, `p99 ${low.p99_us} µs is the quiet seconds' (2 ms), not the stolen one's 50-60 ms nor the warmup's 90 ms`)
  t.ok(low.p50_us >= 995 && low.p50_us <= 1005, 'p50 between them: half of the quiet responses took 1 ms')
  t.equal(lowSteal([part(1)], [null, null, null, null], 1, 4), null, 'no steal figures: null')
  t.equal(lowSteal([part(1)], [0, 5, 5, 5], 1, 4)?.seconds, 0, 'no quiet second: zero of them')
})

t.test('progress line: once a second, the phase, rates, the last second\'s latency and steal', async (t) => {
  const srv = await serve((_n, _req, res) => ok(res))
  t.teardown(() => srv.close())
  const lines: string[] = []
  await runLoad(scenario(srv.url, { duration_s: 2, warmup_s: 1, flows: [flow({ rate: 200 })] }), { progress: (line) => lines.push(line) })
  t.ok(lines.length >= 2, `${lines.length} progress lines over a 3 s run`)
  const shape = /^\[loadgen +\d+s (warmup |measure|drain {2})\] sent \d+\/s ok \d+\/s non-2xx \d+ err \d+ inflight \d+ \| last 1s (no responses|p50 [\d.]+ p99 [\d.]+ max [\d.]+ ms)( steal \d+%)?$/
  t.ok(lines.every((l) => shape.test(l)), `every line has the documented shape: ${JSON.stringify(lines)}`)
  // This suite runs on Linux: the second that just ended has a steal figure.
  t.ok(lines.some((l) => / steal \d+%$/.test(l)), 'lines carry the last second\'s steal')
  // Counts are per report tick, which may straddle a send: about the rate, not exactly.
  const sent = lines.filter((l) => l.includes(' measure] ')).map((l) => Number(/ sent (\d+)\/s/.exec(l)?.[1]))
  t.ok(sent.length >= 1 && sent.every((n) => n >= 190 && n <= 210), `measured seconds sent about the flow's 200/s: ${JSON.stringify(sent)}`)
})
