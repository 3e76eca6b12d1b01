// perf/cpu-steal.ts: /proc/stat's aggregate line read into steal and total
// ticks, and the steal share between two readings.

import t from 'tap'
import { parseCpuTicks, readCpuTicks, stealPct } from '../perf/cpu-steal.js'

t.test('parses the aggregate cpu line: steal is the 8th field, the total the first 8 (guest is inside user)', async (t) => {
  const text = 'cpu  368536 12023 113030 1649697 2244 0 25656 101289 7 9\ncpu0 1 2 3 4 5 6 7 8 0 0\n'
  t.same(parseCpuTicks(text), { steal: 101289, total: 368536 + 12023 + 113030 + 1649697 + 2244 + 0 + 25656 + 101289, idle: 1649697 + 2244 })
})

t.test('text without an aggregate cpu line, or too short, or not numeric: null', async (t) => {
  t.equal(parseCpuTicks(''), null)
  t.equal(parseCpuTicks('cpu0 1 2 3 4 5 6 7 8\n'), null, 'a per-core line is not the aggregate')
  t.equal(parseCpuTicks('cpu 1 2 3 4 5 6 7\n'), null, 'no steal field (pre-2.6.11 kernels)')
  t.equal(parseCpuTicks('cpu 1 2 3 4 x 6 7 8\n'), null)
})

t.test('steal share between two readings', async (t) => {
  t.equal(stealPct({ steal: 10, total: 1000, idle: 500 }, { steal: 30, total: 1200, idle: 550 }), 10, '20 of 200 ticks')
  t.equal(stealPct({ steal: 10, total: 1000, idle: 500 }, { steal: 10, total: 1000, idle: 500 }), null, 'no tick passed')
  t.equal(stealPct(null, { steal: 1, total: 2, idle: 1 }), null)
  t.equal(stealPct({ steal: 1, total: 2, idle: 1 }, null), null)
})

t.test('this machine (Linux): a reading exists and only grows', async (t) => {
  const a = readCpuTicks()
  t.ok(a !== null, '/proc/stat has an aggregate cpu line')
  await new Promise((resolve) => setTimeout(resolve, 30)) // a few 10 ms ticks
  const b = readCpuTicks()
  t.ok(a !== null && b !== null && b.total > a.total && b.steal >= a.steal && b.idle >= a.idle, 'the total advanced and no counter went back')
})
