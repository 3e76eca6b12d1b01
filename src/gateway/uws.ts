// Loads uWebSockets.js's native addon directly. The npm package
// (@trufflesuite/uws-js-unofficial) silently swaps in a slow pure-JS
// implementation when the addon fails to load (wrong Node ABI, libc); a server
// that quietly runs 5-10x slower is worse than one that refuses to start.

import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type * as Uws from '@trufflesuite/uws-js-unofficial'
import { FairwayError } from '../errors.js'

export type UwsModule = typeof Uws

let cached: UwsModule | null = null

export function loadUws (): UwsModule {
  if (cached !== null) return cached
  if (/^(1|true)$/i.test(process.env.UWS_USE_FALLBACK ?? '')) {
    throw new FairwayError('FW_ERR_UWS_FALLBACK', ['UWS_USE_FALLBACK is set'])
  }
  const require = createRequire(import.meta.url)
  const pkgDir = dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'))
  const file = join(pkgDir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`)
  let mod: UwsModule
  try {
    mod = require(file) as UwsModule
  } catch (err) {
    throw new FairwayError('FW_ERR_UWS_FALLBACK', [(err as Error).message.split('\n')[0] ?? 'unknown'])
  }
  // Belt and braces: the native module exposes us_listen_socket_close as a
  // native function; the fallback is plain JS.
  if (typeof mod.App !== 'function' || !/\[native code\]/.test(Function.prototype.toString.call(mod.App))) {
    throw new FairwayError('FW_ERR_UWS_FALLBACK', ['loaded module is not the native addon'])
  }
  cached = mod
  return mod
}
