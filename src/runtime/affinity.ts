// Thread CPU affinity through the fairway_native addon (native-bindings/).
//
// Why: an inference worker that stays on one core keeps its caches warm and
// stops tenants' workers from migrating onto each other's cores. Node has no
// API for the affinity of a single thread, so a ~150-line N-API addon calls
// pthread_setaffinity_np for the calling thread (a worker pins itself).
//
// Cost: one dlopen per thread that loads it, then a syscall per call. The
// addon is optional: if it did not build (no compiler, not Linux) the
// loader returns null and the caller warns once and runs unpinned.

import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface AffinityBinding {
  /** Pin the calling thread to exactly these CPU ids. Throws TypeError on bad input, Error on failure. */
  setThreadAffinity(cpus: readonly number[]): void
  /** CPU ids the calling thread may run on, ascending. */
  getThreadAffinity(): number[]
  /** Kernel thread id (gettid) of the calling thread. */
  threadId(): number
  /** CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID), ns. */
  threadCpuTimeNs(): number
  /** Set the calling thread's nice value (-20..19; lowering it needs privilege). */
  setThreadNice(nice: number): void
  /** The calling thread's nice value. */
  getThreadNice(): number
  /** Name the calling thread (cut to 15 bytes; shown in /proc/<pid>/task/<tid>/comm). */
  setThreadName(name: string): void
}

const ADDON = join('native-bindings', 'build', 'Release', 'fairway_native.node')
const EXPORTS: ReadonlyArray<keyof AffinityBinding> = ['setThreadAffinity', 'getThreadAffinity', 'threadId', 'threadCpuTimeNs', 'setThreadNice', 'getThreadNice', 'setThreadName']

let root: string | undefined

/**
 * Directory of fairway's package.json. This file runs both as
 * src/runtime/affinity.ts and as dist/src/runtime/affinity.js, so we walk up
 * from our own URL rather than assume a depth. Throws if there is none: the
 * install is broken and nothing else would work either.
 */
export function packageRoot(): string {
  if (root !== undefined) return root
  const start = dirname(fileURLToPath(import.meta.url))
  for (let dir = start; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown }
      if (pkg.name === 'fairway') return (root = dir)
    } catch {
      // no (readable) package.json here, keep walking
    }
    if (dirname(dir) === dir) throw new Error(`fairway: no package.json named "fairway" above ${start}`)
  }
}

// Per thread: each worker has its own module instance and loads the addon once.
let loaded: { binding: AffinityBinding | null; error: string | null } | undefined

/** The addon, or null if it cannot be loaded (see affinityLoadError). Cached; never throws. */
export function loadAffinity(): AffinityBinding | null {
  loaded ??= load()
  return loaded.binding
}

/** Why loadAffinity() returned null, for one clear warning by the caller; null if it loaded. */
export function affinityLoadError(): string | null {
  loaded ??= load()
  return loaded.error
}

function load(): { binding: AffinityBinding | null; error: string | null } {
  try {
    if (process.platform !== 'linux') throw new Error(`thread affinity is Linux-only (platform is ${process.platform})`)
    const file = join(packageRoot(), ADDON)
    if (!existsSync(file)) throw new Error(`${file} is missing; build it with \`npm run install\` (needs a C++ toolchain)`)
    const mod = createRequire(import.meta.url)(file) as Partial<AffinityBinding>
    const missing = EXPORTS.filter((name) => typeof mod[name] !== 'function')
    if (missing.length > 0) throw new Error(`${file} does not export ${missing.join('/')}: rebuild it with \`npm run install\``)
    return { binding: mod as AffinityBinding, error: null }
  } catch (err) {
    return { binding: null, error: err instanceof Error ? err.message : String(err) }
  }
}
