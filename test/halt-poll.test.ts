// perf/halt-poll.ts on a stand-in parameter file (the real one is
// machine-wide): set, restore once, and the errors where the knob is missing.

import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { haltPollNote, setHaltPoll } from '../perf/halt-poll.js'

function paramFile (value: string): string {
  const f = join(mkdtempSync(join(tmpdir(), 'fw-haltpoll-')), 'guest_halt_poll_ns')
  writeFileSync(f, value)
  return f
}

t.test('sets the window, remembers the old value, restores it once', async (t) => {
  const f = paramFile('0\n')
  const exitListeners = process.listenerCount('exit')
  const h = setHaltPoll(200_000, f)
  t.equal(readFileSync(f, 'latin1'), '200000')
  t.equal(h.before, 0)
  t.equal(process.listenerCount('exit'), exitListeners + 1, 'restored at exit if the benchmark does not')
  h.restore()
  t.equal(readFileSync(f, 'latin1'), '0')
  t.equal(process.listenerCount('exit'), exitListeners, 'the exit listener is gone')
  writeFileSync(f, '5')
  h.restore()
  t.equal(readFileSync(f, 'latin1'), '5', 'a second restore writes nothing')
  t.match(haltPollNote(h), /guest_halt_poll_ns` 200000 for the run \(was 0/)
  t.match(haltPollNote(null), /not set by the benchmark/)
})

t.test('clear errors: no driver, not a number, bad argument', async (t) => {
  t.throws(() => setHaltPoll(1000, '/nonexistent/guest_halt_poll_ns'), /needs the Linux cpuidle-haltpoll driver/)
  t.throws(() => setHaltPoll(1000, paramFile('abc')), /holds "abc", not a number/)
  t.throws(() => setHaltPoll(-1, paramFile('0')), /whole number of nanoseconds/)
  t.throws(() => setHaltPoll(1.5, paramFile('0')), /whole number of nanoseconds/)
})
