// Every perf entry point, as the README runs it (compiled, under dist/):
// `--help` prints its usage and exits 0 without starting anything (no server,
// no line added to perf/RESULTS.md); an unknown option or a bad value exits 2
// with the error and the usage, not a parseArgs stack trace.

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { packageRoot } from '../src/runtime/affinity.js'

const ROOT = packageRoot()
const RESULTS = join(ROOT, 'perf', 'RESULTS.md')
const ENTRIES = [
  'loadgen', 'report-html', 'overhead', 'bench-sweep', 'bench-fairness', 'bench-admission',
  'bench-cost', 'bench-cost-rate', 'bench-protocols', 'baselines/bare-server', 'baselines/naive-server',
]

function run (entry: string, args: string[]): { status: number | null, stdout: string, stderr: string } {
  return spawnSync(process.execPath, [join(ROOT, 'dist', 'perf', `${entry}.js`), ...args], { encoding: 'utf8', timeout: 30_000 })
}

const before = readFileSync(RESULTS, 'utf8')

for (const entry of ENTRIES) {
  t.test(entry, async (t) => {
    const help = run(entry, ['--help'])
    t.equal(help.status, 0, '--help exits 0')
    t.match(help.stdout, /^usage: node dist\/perf\//, '--help prints the usage')
    t.match(help.stdout, /--help/, 'the usage lists --help')

    const bad = run(entry, ['--no-such-option'])
    t.equal(bad.status, 2, 'an unknown option exits 2')
    t.match(bad.stderr, /Unknown option '--no-such-option'/, 'and names the option')
    t.match(bad.stderr, /usage: /, 'and prints the usage')
    t.notMatch(bad.stderr, /\n\s+at /, 'no stack trace')
  })
}

t.test('a bad value is refused before anything runs', async (t) => {
  const cases: Array<[string, string[], RegExp]> = [
    ['bench-cost-rate', ['--rate', 'fast'], /--rate fast: expected a number >= 1/],
    ['bench-fairness', ['--cost', 'maybe'], /--cost maybe: expected one of on, off/],
    ['bench-fairness', ['--only', 'noisy,everything'], /--only everything: expected one of noisy, weights, heavy, batching/],
    ['bench-cost', ['--case', 'nope'], /--case nope: expected one of emit, throughput, freshness/],
    ['loadgen', ['--duration', 'x', 'perf/scenarios/overhead.json'], /--duration x: expected a number >= 0/],
    ['overhead', ['--fixed-rate', '0'], /bad number 0/],
    ['overhead', ['--servers', 'bare,fast'], /unknown server fast/],
    ['overhead', ['--rounds', '0'], /nothing to measure: --rounds 0 needs --pairs N/],
    ['overhead', ['--pairs', '1.5'], /bad count 1.5/],
    ['bench-sweep', ['--protocol', 'carrier-pigeon'], /--protocol must be http or websocket/],
  ]
  for (const [entry, args, message] of cases) {
    const r = run(entry, args)
    t.equal(r.status, 2, `${entry} ${args.join(' ')} exits 2`)
    t.match(r.stderr, message, `${entry} ${args.join(' ')} says why`)
  }
})

t.test('bare-server --refuse answers 429 without running the model, and still serves health', async (t) => {
  const proc = spawn(process.execPath, [join(ROOT, 'dist', 'perf', 'baselines', 'bare-server.js'), '--port', '0', '--refuse'], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { proc.kill('SIGTERM') })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    proc.stdout.on('data', (b: Buffer) => {
      out += b.toString()
      const m = /listening on (http:\/\/\S+)/.exec(out)
      if (m?.[1] !== undefined) resolve(m[1])
    })
    proc.once('exit', (code) => { reject(new Error(`bare-server exited ${String(code)}: ${out}`)) })
  })
  // A body the model would reject as 400: --refuse must not look at it.
  const r = await fetch(`${url}/v2/models/tiny-classifier/infer`, { method: 'POST', body: 'not json' })
  t.equal(r.status, 429)
  t.match(await r.json(), { code: 'tenant_rate' })
  const live = await fetch(`${url}/v2/health/live`)
  t.equal(live.status, 200)
})

t.test('perf/RESULTS.md is untouched by all of the above', async (t) => {
  t.equal(readFileSync(RESULTS, 'utf8'), before)
})
