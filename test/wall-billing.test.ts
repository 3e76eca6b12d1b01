import t from 'tap'
import { WallBilling } from '../src/runtime/wall-billing.js'

t.test('the first batch of a row count is billed in full and seeds its average', async (t) => {
  const b = new WallBilling(8)
  t.equal(b.bill(1, 5_000_000), 5_000_000, 'even a long first batch')
  t.equal(b.bill(2, 40_000), 40_000, 'another row count has its own average')
})

t.test('a preempted batch is billed at most 3x its row count\'s average + 20 µs', async (t) => {
  const b = new WallBilling(8)
  for (let i = 0; i < 50; i++) t.equal(b.bill(4, 50_000), 50_000, 'steady batches are billed their wall time')
  t.equal(b.bill(4, 2_000_000), 3 * 50_000 + 20_000, 'a 2 ms batch (preempted) is capped')
  t.equal(b.bill(1, 2_000_000), 2_000_000, 'a row count never seen is not capped by another')
  // The capped batch moved the average by 5% of (170 µs - 50 µs) = 6 µs only.
  t.equal(b.bill(4, 1_000_000), 3 * 56_000 + 20_000, 'and raised the average by 5% of what it was billed')
})

t.test('a lasting slowdown is billed in full within a few dozen batches', async (t) => {
  const b = new WallBilling(8)
  for (let i = 0; i < 50; i++) b.bill(1, 20_000)
  let capped = 0
  let last = 0
  for (let i = 0; i < 60; i++) {
    last = b.bill(1, 200_000) // 10x slower from here on
    if (last < 200_000) capped++
  }
  t.equal(last, 200_000, 'billed in full after the average caught up')
  t.ok(capped > 0 && capped < 40, `capped for ${capped} batches, then not`)
})

t.test('row counts outside the table are billed their wall time', async (t) => {
  const b = new WallBilling(4)
  t.equal(b.bill(5, 123), 123)
  t.equal(b.bill(0, 77), 77)
})
