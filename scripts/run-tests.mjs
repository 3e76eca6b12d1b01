#!/usr/bin/env node
// Runs the tap suite with the TAP reporter, passes its output through, and
// ends with the `N passed, N failed` line CI reads. Leaf assertions are
// counted; a subtest's own summary line is not counted again, but a test file
// that fails without any failing assertion (a crash) counts as one failure.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

const args = ['tap', '--reporter=tap', ...process.argv.slice(2)]
const child = spawn('npx', args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FORCE_COLOR: '0' } })

let passed = 0
let failed = 0
const stack = [] // [{ indent, failedLeaves }]
const rl = createInterface({ input: child.stdout })
rl.on('line', (line) => {
  process.stdout.write(line + '\n')
  const sub = /^(\s*)# Subtest: /.exec(line)
  if (sub) { stack.push({ indent: sub[1].length, failedLeaves: 0 }); return }
  const m = /^(\s*)(not ok|ok) \d+/.exec(line)
  if (!m) return
  const indent = m[1].length
  const ok = m[2] === 'ok'
  const top = stack[stack.length - 1]
  if (top && top.indent === indent) {
    stack.pop()
    if (!ok && top.failedLeaves === 0 && !/# (SKIP|TODO)/i.test(line)) { failed++; for (const s of stack) s.failedLeaves++ }
    return
  }
  if (/# SKIP/i.test(line)) return
  if (ok) passed++
  else { failed++; for (const s of stack) s.failedLeaves++ }
})
child.on('close', (code) => {
  rl.close()
  if (code !== 0 && failed === 0) failed = 1
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(code ?? 1)
})
