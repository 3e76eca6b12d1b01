// Hypervisor steal time: CPU time the VM's virtual cores were ready to run but
// the host ran something else. On this 2-core VM it comes in episodes (0–2%
// for minutes, then 15–40% for tens of seconds), and a core taken away for a
// few milliseconds delays every request in flight on it: a latency tail no
// server change can remove. Every load result records it so a run's tail can
// be read against it (perf/README.md, "Steal time").
//
// Source: the first line of /proc/stat, in clock ticks summed over all cores:
//   cpu  user nice system idle iowait irq softirq steal guest guest_nice
// guest and guest_nice are already counted in user and nice, so the total is
// the first eight fields. Off Linux there is no such file: null.

import { readFileSync } from 'node:fs'

export interface CpuTicks {
  /** Ticks stolen by the hypervisor, all cores. */
  steal: number
  /** Ticks of every kind (user nice system idle iowait irq softirq steal), all cores. */
  total: number
  /** Ticks no one ran (idle + iowait), all cores: total - idle is the machine's busy time, steal included. */
  idle: number
}

/** Parses /proc/stat's aggregate `cpu` line; null if the text has none. */
export function parseCpuTicks (procStat: string): CpuTicks | null {
  const line = procStat.split('\n', 1)[0] ?? ''
  const f = line.trim().split(/\s+/)
  if (f[0] !== 'cpu' || f.length < 9) return null
  const n = f.slice(1, 9).map(Number)
  if (n.some((v) => !Number.isFinite(v))) return null
  return { steal: n[7] as number, total: n.reduce((a, b) => a + b, 0), idle: (n[3] as number) + (n[4] as number) }
}

/** The machine's ticks now; null where /proc/stat cannot be read. */
export function readCpuTicks (): CpuTicks | null {
  try {
    return parseCpuTicks(readFileSync('/proc/stat', 'latin1'))
  } catch {
    return null
  }
}

/** Percent of all cores' time stolen between two readings; null if either is missing or no tick passed. */
export function stealPct (from: CpuTicks | null, to: CpuTicks | null): number | null {
  if (from === null || to === null) return null
  const total = to.total - from.total
  return total > 0 ? 100 * (to.steal - from.steal) / total : null
}
