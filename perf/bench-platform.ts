// The benchmark platform shared by the perf scripts: tenants with known keys
// and limits, light work on CPU 1 and heavy work on CPU 0, and helpers that
// start and stop a real fairway on it as a child process.

import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
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
 * (isolation is what is measured). `gatewayCpus` pins the gateway thread.
 */
export function platform (gatewayCpus: number[] | undefined, costEvents: boolean): Record<string, unknown> {
  const generous: Limits = { concurrency: 10_000, ratePerSecond: 0, burst: 1, queueDepth: 200, timeoutMs: 30_000 }
  return {
    server: { host: '127.0.0.1', port: 0, ...(gatewayCpus === undefined ? {} : { cpus: gatewayCpus }) },
    admin: { tokens: [`sha256:${hashApiKey(ADMIN)}`] },
    modelRepository: join(ROOT, 'models'),
    pricing: { version: 'bench', perComputeSecondUsd: { '*': 0.0001 }, perRequestUsd: 0, nodeCostPerHourUsd: 0.2 },
    // Cost events on, as in production: what is measured includes them.
    cost: { enabled: costEvents, dataDir: join(ROOT, 'perf', 'out', 'fairness-cost', 'chdb'), spoolDir: join(ROOT, 'perf', 'out', 'fairness-cost', 'spool') },
    serviceClasses: {
      shared: { weight: 1, cpus: [1], workers: 1, maxQueued: 2048 },
      heavy: { weight: 1, cpus: [0], workers: 1, maxQueued: 2048 },
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

export async function startFairway (configFile: string, extra: string[] = []): Promise<Server> {
  const proc = spawn(process.execPath, [join(ROOT, 'bin', 'fairway.js'), 'start', '--config', configFile, '--port', '0', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on (http:\/\/[^\s]+)/.exec(out)
      if (m?.[1] !== undefined) resolve(m[1])
    })
    proc.once('exit', (c) => { reject(new Error(`fairway exited ${c}: ${out}`)) })
  })
  return { proc, url }
}

export async function stop (s: Server): Promise<void> {
  const done = new Promise((resolve) => s.proc.once('exit', resolve))
  s.proc.kill('SIGTERM')
  await done
}

