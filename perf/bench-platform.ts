// The benchmark platform shared by the perf scripts: tenants with known keys
// and limits, light work on CPU 1 and heavy work on CPU 0 (at nice 10, as in
// the demo platform), and helpers that
// start and stop a real fairway on it as a child process.

import { spawn, type ChildProcess } from 'node:child_process'
import { appendFileSync } from 'node:fs'
import { availableParallelism, cpus } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { hashApiKey } from '../src/control-plane/api-keys.js'
import { packageRoot } from '../src/runtime/affinity.js'

export const ROOT = packageRoot()
export const ADMIN = 'fw_bench_admin'

type Limits = { concurrency: number, ratePerSecond: number, burst: number, queueDepth: number, timeoutMs: number }
function tenant (key: string, models: Record<string, string>, limits: Limits, weight = 1): Record<string, unknown> {
  return {
    tier: 'shared', weight, queueClass: 'shared', apiKeys: [`sha256:${hashApiKey(key)}`], models, limits,
    region: 'bench', costCenter: 'bench',
  }
}

/**
 * The benchmark platform: light work on CPU 1, heavy work on CPU 0, no lending
 * (isolation is what is measured). `gatewayCpus` pins the gateway thread;
 * `lightRuntime` 'inline' runs the light class on the gateway thread instead.
 */
export function platform (gatewayCpus: number[] | undefined, costEvents: boolean, backgroundNice?: number, lightRuntime: 'workers' | 'inline' = 'workers'): Record<string, unknown> {
  const generous: Limits = { concurrency: 10_000, ratePerSecond: 0, burst: 1, queueDepth: 200, timeoutMs: 30_000 }
  return {
    server: { host: '127.0.0.1', port: 0, ...(gatewayCpus === undefined ? {} : { cpus: gatewayCpus }), ...(backgroundNice === undefined ? {} : { backgroundNice }) },
    admin: { tokens: [`sha256:${hashApiKey(ADMIN)}`] },
    modelRepository: join(ROOT, 'models'),
    pricing: { version: 'bench', perComputeSecondUsd: { '*': 0.0001 }, perRequestUsd: 0, nodeCostPerHourUsd: 0.2 },
    // Cost events on, as in production: what is measured includes them.
    cost: { enabled: costEvents, dataDir: join(ROOT, 'perf', 'out', 'fairness-cost', 'chdb'), spoolDir: join(ROOT, 'perf', 'out', 'fairness-cost', 'spool') },
    serviceClasses: {
      // `inline`: the light class runs its batches on the gateway thread.
      shared: lightRuntime === 'inline' ? { weight: 1, runtime: 'inline', maxQueued: 2048 } : { weight: 1, cpus: [1], workers: 1, maxQueued: 2048 },
      heavy: { weight: 1, cpus: [0], nice: 10, workers: 1, maxQueued: 2048 },
    },
    models: {
      'tiny-classifier': {
        modelClass: 'light', versions: { 1: { artifact: 'tiny-classifier/1/model.onnx' } }, defaultVersion: '1',
        input: { name: 'input', datatype: 'FP32', shape: [-1, 64] }, output: { name: 'probabilities', datatype: 'FP32', shape: [-1, 8] },
        batching: { maxBatchSize: 64, maxRowsPerRequest: 32 },
      },
      'heavy-encoder': {
        modelClass: 'heavy', serviceClass: 'heavy', versions: { 1: { artifact: 'heavy-encoder/1/model.onnx' } }, defaultVersion: '1',
        input: { name: 'input', datatype: 'FP32', shape: [-1, 128] }, output: { name: 'embedding', datatype: 'FP32', shape: [-1, 16] },
        batching: { maxBatchSize: 8, maxRowsPerRequest: 8 },
      },
    },
    tenants: {
      v1: tenant('fw_bench_v1', { 'tiny-classifier': '1' }, { concurrency: 256, ratePerSecond: 400, burst: 40, queueDepth: 128, timeoutMs: 5000 }),
      v2: tenant('fw_bench_v2', { 'tiny-classifier': '1' }, { concurrency: 256, ratePerSecond: 400, burst: 40, queueDepth: 128, timeoutMs: 5000 }),
      noisy: tenant('fw_bench_noisy', { 'tiny-classifier': '1' }, { concurrency: 64, ratePerSecond: 300, burst: 30, queueDepth: 64, timeoutMs: 5000 }),
      w1: tenant('fw_bench_w1', { 'heavy-encoder': '1' }, generous, 1),
      w2: tenant('fw_bench_w2', { 'heavy-encoder': '1' }, generous, 2),
      w4: tenant('fw_bench_w4', { 'heavy-encoder': '1' }, generous, 4),
      big: tenant('fw_bench_big', { 'tiny-classifier': '1' }, { concurrency: 100_000, ratePerSecond: 0, burst: 1, queueDepth: 4096, timeoutMs: 30_000 }),
    },
  }
}

export interface Server { proc: ChildProcess, url: string }

/** The tiny model the baselines serve (the demo's tiny-classifier v1). */
export const BASELINE_MODEL = join(ROOT, 'models', 'tiny-classifier', '1', 'model.onnx')

/**
 * Starts a server script as a child process and resolves with its URL once
 * it prints `listening on http://...`; rejects with what it printed if it
 * exits first or stays silent for 60 s.
 */
export async function spawnServer (args: string[], what: string): Promise<Server & { output: string[] }> {
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  const output: string[] = []
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${what} did not report listening within 60 s:\n${output.join('')}`)) }, 60_000)
    proc.stdout?.on('data', (d: Buffer) => {
      output.push(d.toString())
      const m = /listening on (http:\/\/[^\s]+)/.exec(output.join(''))
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(m[1].replace(/\/$/, '')) }
    })
    proc.stderr?.on('data', (d: Buffer) => { output.push(d.toString()) })
    proc.once('exit', (c) => { clearTimeout(timer); reject(new Error(`${what} exited (${c}) before listening:\n${output.join('')}`)) })
  })
  return { proc, url, output }
}

export async function startFairway (configFile: string, extra: string[] = []): Promise<Server> {
  return await spawnServer([join(ROOT, 'bin', 'fairway.js'), 'start', '--config', configFile, '--port', '0', ...extra], 'fairway')
}

/** A baseline server of perf/baselines/ (bare: uWS + onnxruntime in-process; naive: node:http) on the tiny model. */
export async function startBaseline (name: 'bare' | 'naive', extra: string[] = []): Promise<Server & { output: string[] }> {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
  return await spawnServer([...process.execArgv, join(dirname(fileURLToPath(import.meta.url)), 'baselines', `${name}-server${ext}`), '--port', '0', ...extra, BASELINE_MODEL], name)
}

export async function stop (s: Server): Promise<void> {
  const done = new Promise((resolve) => s.proc.once('exit', resolve))
  s.proc.kill('SIGTERM')
  await done
}

/** The median (the mean of the middle two for an even count); NaN for none. */
export function median (xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  return n === 0 ? NaN : n % 2 === 1 ? (s[(n - 1) / 2] ?? NaN) : ((s[n / 2 - 1] ?? NaN) + (s[n / 2] ?? NaN)) / 2
}

/** CPU model and core count, for the header of every benchmark's results. */
export function machine (): string {
  return `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, ${process.platform} ${process.arch}`
}

/** Appends a benchmark's section to a results file (perf/RESULTS.md) and says where. */
export function appendResults (file: string, section: string): void {
  appendFileSync(file, section)
  console.log(`appended to ${relative(process.cwd(), file)}`)
}

/** Runs a benchmark's main(): its return value is the exit code; an error is printed, exit code 1. */
export function runMain (main: () => Promise<number>): void {
  main().then((code) => { process.exitCode = code }, (err: unknown) => {
    console.error(err instanceof Error ? err.message : err)
    process.exitCode = 1
  })
}
