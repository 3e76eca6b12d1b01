// Guest halt polling for a benchmark's duration (opt-in: --halt-poll-ns N).
//
// Why: this VM's idle vCPUs halt at once (cpuidle driver "haltpoll", booted
// with haltpoll.guest_halt_poll_ns=0), and waking a halted vCPU waits for the
// host to run its thread again. That wait is counted as steal in /proc/stat,
// and every request that needed the wake carries it. Pure CPU burn on both
// vCPUs saw almost no steal (0–2.5% over 4 s phases); the benchmarks' sleep
// and wake traffic saw up to 40% (perf/RESULTS.md, session 18). With
// `guest_halt_poll_ns` an idle vCPU first polls for up to N ns (the driver
// adapts the window), so a wake that comes soon needs no host round trip: the
// latency benchmarks' counterpart of limiting C-states on bare metal.
//
// Cost: a polling vCPU burns host CPU while it would have been idle, so CPU
// figures per process are unchanged but the machine looks busier. The knob
// is machine-wide and needs root; the old value is written back when the
// benchmark ends, also on SIGINT / SIGTERM.

import { readFileSync, writeFileSync } from 'node:fs'

export const HALT_POLL_FILE = '/sys/module/haltpoll/parameters/guest_halt_poll_ns'

export interface HaltPoll {
  /** The value before the benchmark set its own. */
  readonly before: number
  readonly ns: number
  /** Writes `before` back (once; later calls do nothing). */
  restore (): void
}

/** Sets the guest halt-polling window to `ns` until restore(); throws a clear error where the knob is missing or not writable. */
export function setHaltPoll (ns: number, file = HALT_POLL_FILE): HaltPoll {
  if (!Number.isInteger(ns) || ns < 0) throw new Error(`--halt-poll-ns must be a whole number of nanoseconds >= 0, not ${ns}`)
  let text: string
  try {
    text = readFileSync(file, 'latin1')
  } catch {
    throw new Error(`--halt-poll-ns needs the Linux cpuidle-haltpoll driver: ${file} is not there on this machine`)
  }
  const before = Number(text.trim())
  if (!Number.isInteger(before)) throw new Error(`${file} holds ${JSON.stringify(text.trim())}, not a number`)
  try {
    writeFileSync(file, String(ns))
  } catch (err) {
    throw new Error(`--halt-poll-ns could not write ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'}): it needs root`)
  }
  let restored = false
  const restore = (): void => {
    if (restored) return
    restored = true
    process.off('exit', restore)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    writeFileSync(file, String(before))
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    restore()
    process.kill(process.pid, sig) // the default action, now that our listener is gone
  }
  process.on('exit', restore)
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  return { before, ns, restore }
}

/** The line a benchmark's results section gives the setting. */
export function haltPollNote (h: HaltPoll | null): string {
  return h === null
    ? '- guest halt polling: as the machine has it (not set by the benchmark)'
    : `- guest halt polling: \`guest_halt_poll_ns\` ${h.ns} for the run (was ${h.before}; perf/halt-poll.ts)`
}
