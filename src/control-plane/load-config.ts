// Reads a platform config file, validates it and checks that every model
// artifact it names exists. One entry point for the server and for
// `fairway config check`, so both report exactly the same problems.

import { existsSync, readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { FairwayError } from '../errors.js'
import type { PlatformConfig } from './config-types.js'
import { duplicateKeys } from './duplicate-keys.js'
import { validateConfig, type ConfigProblem } from './validate-config.js'

export type LoadResult =
  | { readonly ok: true; readonly config: PlatformConfig }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] }

export function checkConfigFile (file: string): LoadResult {
  const path = resolve(file)
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    return { ok: false, problems: [{ path: '$', message: `cannot read ${path}: ${(err as Error).message}` }] }
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    return { ok: false, problems: [{ path: '$', message: `not valid JSON: ${(err as Error).message}` }] }
  }
  const dups = duplicateKeys(text)
  const res = checkConfig(raw, dirname(path), path)
  if (dups.length === 0) return res
  return { ok: false, problems: [...dups, ...(res.ok ? [] : res.problems)] }
}

/** Validates an in-memory config (tests build configs this way). */
export function checkConfig (raw: unknown, baseDir: string, source: string | null = null): LoadResult {
  const res = validateConfig(raw, { baseDir, source })
  if (!res.ok) return res
  const missing: ConfigProblem[] = []
  for (const m of res.config.models.values()) {
    for (const v of m.versions.values()) {
      if (!existsSync(v.artifact)) {
        missing.push({ path: `$.models.${m.id}.versions.${v.version}.artifact`, message: `file ${v.artifact} does not exist (npm run build generates the demo models)` })
      }
    }
  }
  return missing.length > 0 ? { ok: false, problems: missing } : res
}

/** Throws FW_ERR_CONFIG_INVALID listing every problem. */
export function loadConfigFile (file: string): PlatformConfig {
  const res = checkConfigFile(file)
  if (res.ok) return res.config
  throw configError(file, res.problems)
}

export function configError (source: string, problems: readonly ConfigProblem[]): FairwayError {
  const lines = problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')
  return new FairwayError('FW_ERR_CONFIG_INVALID', [`${source}:\n${lines}`], problems)
}
