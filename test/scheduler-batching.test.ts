// The batching window (models.<m>.batching.maxQueueDelayUs, tenants.<t>.limits.
// maxBatchWaitUs) and the deadline timer, driven deterministically: a real
// ClassPool (Piscina worker, onnxruntime, the demo tiny-classifier), the real
// admission table and InferenceService, and a fake clock injected into the
// ClassScheduler, so "within the window" and "past the deadline" are exact
// fake times, not sleeps. The shared class has one worker; globex has the
// model's 50 ms window, initech a cap of 0.

import t, { type Test } from 'tap'
import { AdmissionTable } from '../src/admission/admission-table.js'
import { TenantRegistry, type Route } from '../src/control-plane/registry.js'
import type { FairwayError } from '../src/errors.js'
import { InferenceService } from '../src/gateway/inference-service.js'
import { ClassPool } from '../src/runtime/class-pool.js'
import { ClassScheduler, type SchedulerClock } from '../src/scheduling/class-scheduler.js'
import { GatewayMetrics } from '../src/telemetry/metrics.js'
import { configFrom, demoRaw } from './helpers/server.js'
import { referenceForward, sampleInput, specFor } from './helpers/reference.js'

/** Time moves only when the test says so; due timers fire in time order. */
class FakeClock implements SchedulerClock {
  t = 1000
  private timers: Array<{ at: number, fn: () => void, live: boolean }> = []

  now (): number {
    return this.t
  }

  setTimer (fn: () => void, ms: number): { close (): void } {
    const timer = { at: this.t + Math.max(0, ms), fn, live: true }
    this.timers.push(timer)
    return { close: () => { timer.live = false } }
  }

  /** Times the armed timers will fire at. */
  armed (): number[] {
    return this.timers.filter((x) => x.live).map((x) => x.at)
  }

  advanceTo (to: number): void {
    for (;;) {
      const due = this.timers.filter((x) => x.live && x.at <= to).sort((a, b) => a.at - b.at)[0]
      if (due === undefined) break
      due.live = false
      this.t = Math.max(this.t, due.at)
      due.fn()
    }
    this.t = to
  }
}

const WINDOW_MS = 50
const raw = demoRaw()
raw.models['tiny-classifier'].batching = { maxBatchSize: 8, maxRowsPerRequest: 8, maxQueueDelayUs: WINDOW_MS * 1000 }
raw.tenants.initech.limits.maxBatchWaitUs = 0
const config = configFrom(raw)
const registry = new TenantRegistry(config)
const admission = new AdmissionTable(registry.tenants.length, registry.classSlots.size)
for (const tn of registry.tenants) admission.setTenantPolicy(tn.slot, tn.config.limits)
for (const [id, slot] of registry.classSlots) admission.setClassShed(slot, config.serviceClasses.get(id)?.maxQueued ?? 1)
const sharedClass = config.serviceClasses.get('shared')
if (sharedClass === undefined) throw new Error('demo has no shared class')
const units = registry.unitsOfClass('shared')
const pool = new ClassPool(sharedClass, units)
await pool.start()
const clock = new FakeClock()
const weights = registry.tenants.map((x) => x.config.weight)
const scheduler = new ClassScheduler(pool, units, admission, registry.classSlots.get('shared') ?? 0, (f) => weights[f] ?? 1, true, clock)
const service = new InferenceService(admission, new Map([['shared', scheduler]]), new GatewayMetrics(), null)
t.teardown(async () => {
  scheduler.stop()
  await pool.close()
})

function routeOf (tenant: string): Route {
  const entry = registry.tenantById(tenant)
  if (entry === undefined) throw new Error(`no tenant ${tenant}`)
  return registry.resolve(entry, 'tiny-classifier', null)
}
const globex = routeOf('globex')
const initech = routeOf('initech')

interface Answer { err: FairwayError | null, output: Float32Array | null }

/** Submits `rows` rows arriving now (fake time); resolves with the answer. */
function submit (route: Route, rows: number, seed: number, clientTimeoutMs: number | null = null): { input: Float32Array, answer: Promise<Answer> } {
  const input = sampleInput(64, rows, seed)
  const answer = new Promise<Answer>((resolve) => {
    service.submit(route, 'test', { id: undefined, rows, data: input.slice(), timeoutMs: null }, clientTimeoutMs, clock.now(), (err, output) => { resolve({ err, output: output?.slice() ?? null }) })
  })
  return { input, answer }
}

/**
 * Pins the scheduler's per-row estimate of the unit (otherwise a moving
 * average of REAL batch times): where a hold ends depends on it, and a batch
 * preempted for ~20 ms on a loaded machine would move that end unpredictably.
 */
function pinEstimate (route: Route, usPerRow: number): void {
  const unit = (scheduler as unknown as { units: Map<string, { usPerRow: number }> }).units.get(route.unitKey)
  if (unit === undefined) throw new Error(`no unit ${route.unitKey}`)
  unit.usPerRow = usPerRow
}

/** Lets the scheduler's setImmediate pump run (fake time does not move). */
const turn = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

/** After answers arrived: one more turn so the batch's completion has freed the worker. */
async function settled (answers: Array<Promise<Answer>>): Promise<Answer[]> {
  const all = await Promise.all(answers)
  await turn()
  return all
}

function matchesReference (t: Test, input: Float32Array, output: Float32Array | null, rows: number): void {
  const want = referenceForward(specFor('tiny-classifier', '1'), input, rows)
  t.ok(output !== null && output.length === want.length && output.every((v, i) => Math.abs(v - (want[i] as number)) < 1e-5), 'output matches the reference')
}

t.test('requests arriving within the window leave as one batch when it ends', async (t) => {
  const before = { ...scheduler.stats }
  const start = clock.now()
  const sent = []
  for (let i = 0; i < 5; i++) {
    clock.advanceTo(start + i * 10)
    sent.push(submit(globex, 1, 100 + i))
    await turn()
    t.equal(scheduler.stats.batches, before.batches, `held after arrival ${i + 1} at +${i * 10} ms (worker free)`)
  }
  t.same(clock.armed(), [start + WINDOW_MS], 'one timer, at the oldest arrival + the window')
  clock.advanceTo(start + WINDOW_MS)
  t.equal(scheduler.stats.batches, before.batches + 1, 'the window ended: one batch')
  t.equal(scheduler.stats.rows, before.rows + 5, 'with all five requests')
  const answers = await settled(sent.map((s) => s.answer))
  answers.forEach((a, i) => {
    t.equal(a.err, null)
    matchesReference(t, (sent[i] as { input: Float32Array }).input, a.output, 1)
  })
  t.same(clock.armed(), [], 'nothing queued, no timer armed')
})

t.test('a batch that fills leaves at once, before the window ends', async (t) => {
  const before = { ...scheduler.stats }
  const start = clock.now()
  const a = submit(globex, 3, 200)
  await turn()
  t.equal(scheduler.stats.batches, before.batches, '3 of 8 rows: held')
  clock.advanceTo(start + 1)
  const b = submit(globex, 5, 201)
  await turn()
  t.equal(scheduler.stats.batches, before.batches + 1, 'the arrival filled it: it left')
  t.equal(scheduler.stats.rows, before.rows + 8)
  t.equal(clock.now(), start + 1, 'at +1 ms of a 50 ms window')
  const [ra, rb] = await settled([a.answer, b.answer])
  matchesReference(t, a.input, ra?.output ?? null, 3)
  matchesReference(t, b.input, rb?.output ?? null, 5)
})

t.test('a tenant with maxBatchWaitUs 0 is never held, and its arrival ends a hold', async (t) => {
  const before = { ...scheduler.stats }
  const alone = submit(initech, 1, 300)
  await turn()
  t.equal(scheduler.stats.batches, before.batches + 1, 'dispatched at once although the model has a window')
  await settled([alone.answer])

  const held = submit(globex, 1, 301)
  await turn()
  t.equal(scheduler.stats.batches, before.batches + 1, 'globex (the model\'s window) is held')
  const cap0 = submit(initech, 1, 302)
  await turn()
  t.equal(scheduler.stats.batches, before.batches + 2, 'initech arrived: the batch left without waiting')
  t.equal(scheduler.stats.rows, before.rows + 3, 'carrying both requests')
  const [rh, rc] = await settled([held.answer, cap0.answer])
  matchesReference(t, held.input, rh?.output ?? null, 1)
  matchesReference(t, cap0.input, rc?.output ?? null, 1)
})

t.test('a request is not held past its deadline minus the batch estimate', async (t) => {
  const before = { ...scheduler.stats }
  const start = clock.now()
  pinEstimate(globex, 100)
  const short = submit(globex, 1, 400, 20)
  await turn()
  const [at] = clock.armed()
  // A full batch of 8 rows at 100 µs a row: the hold ends 0.8 ms early.
  t.ok(at !== undefined && Math.abs(at - (start + 20 - 0.8)) < 1e-9, `hold ends at +${((at ?? 0) - start).toFixed(3)} ms: the 20 ms deadline minus a full batch's estimate (window ${WINDOW_MS} ms)`)
  clock.advanceTo(at ?? start)
  t.equal(scheduler.stats.batches, before.batches + 1, 'dispatched at the end of the hold')
  const [r] = await settled([short.answer])
  t.equal(r?.err, null, 'answered, not 504')
  matchesReference(t, short.input, r?.output ?? null, 1)
})

t.test('expired jobs never run: answered by the class timer, or at dispatch', async (t) => {
  const before = { ...scheduler.stats }
  // The class timer fires late (Node timers can): the deadline has passed by
  // the time it runs, so it answers 504 instead of dispatching. The deadline
  // (40 ms) stays well above the hold's margin of a full batch's estimated
  // time, which comes from REAL measured batches: a slow one on a loaded
  // machine must not end the hold at once (a 5 ms deadline did, in CI).
  const start = clock.now()
  pinEstimate(globex, 100)
  const late = submit(globex, 1, 500, 40)
  await turn()
  const [at] = clock.armed()
  t.ok(at !== undefined && at < start + 40, 'held, the timer armed before the 40 ms deadline')
  clock.t = start + 60
  clock.advanceTo(start + 60)
  const rl = await late.answer
  t.equal(rl.err?.code, 'FW_ERR_DEADLINE_EXCEEDED', 'answered 504 by the timer')
  t.equal(rl.err?.reason, 'deadline_exceeded')
  t.equal(scheduler.stats.expired, before.expired + 1)
  t.equal(scheduler.stats.batches, before.batches, 'and never dispatched')

  // The deadline passes before any timer fires; the next dispatch (an
  // arrival that is never held) finds the job expired and leaves it out.
  const start2 = clock.now()
  const late2 = submit(globex, 1, 501, 40)
  await turn()
  clock.t = start2 + 60
  const next = submit(initech, 1, 502)
  await turn()
  const [rl2, rn] = await settled([late2.answer, next.answer])
  t.equal(rl2?.err?.code, 'FW_ERR_DEADLINE_EXCEEDED', 'the dispatch expired it')
  t.equal(rn?.err, null, 'the request dispatched with it was served')
  matchesReference(t, next.input, rn?.output ?? null, 1)
  t.equal(scheduler.stats.expired, before.expired + 2)
  t.equal(scheduler.stats.batches, before.batches + 1)
  t.equal(scheduler.stats.rows, before.rows + 1, 'the expired requests never ran')
  clock.advanceTo(start2 + 80) // the stale timer fires on an empty queue: nothing happens
  t.same(clock.armed(), [], 'and no timer is left armed')
})

t.test('admission counts come back to zero', async (t) => {
  for (const tn of registry.tenants) {
    t.equal(admission.inflight(tn.slot), 0, `${tn.config.id}: nothing in flight`)
    t.equal(admission.queued(tn.slot), 0, `${tn.config.id}: nothing counted queued`)
  }
  t.equal(scheduler.queued, 0)
})

// Last: it stops the scheduler the other tests share.
t.test('after stop() (shutdown) the scheduler arms no timer, so nothing keeps the process alive', async (t) => {
  scheduler.stop()
  const before = clock.armed().length
  t.equal(before, 0, 'stop() closed the class timer')
  // A request that would be held for the window (and so arm its end) arrives
  // after stop, as a batch failed by a closing pool would pump again.
  void submit(globex, 1, 900).answer
  await turn()
  t.same(clock.armed(), [], 'no timer armed after stop()')
})
