// How every perf script reads its command line. `--help` prints the usage
// and exits 0 before anything runs: a benchmark must not start (and append
// to perf/RESULTS.md) because someone asked what it does. An unknown option
// or a stray argument prints the error and the usage and exits 2, instead of
// a parseArgs stack trace.

import { parseArgs, type ParseArgsConfig } from 'node:util'

type Options = NonNullable<ParseArgsConfig['options']>
type Config<O extends Options, P extends boolean> = { options: O & { help: { type: 'boolean', default: false } }, allowPositionals: P, strict: true }

/** parseArgs with `--help` added; exits the process on `--help` (0) or a bad command line (2). */
export function parseCli<const O extends Options, const P extends boolean = false> (usage: string, options: O, allowPositionals?: P): ReturnType<typeof parseArgs<Config<O, P>>> {
  const config = { options: { ...options, help: { type: 'boolean', default: false } }, allowPositionals: allowPositionals ?? false, strict: true } as Config<O, P>
  let parsed: ReturnType<typeof parseArgs<Config<O, P>>>
  try {
    parsed = parseArgs(config)
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${usage}`)
    process.exit(2)
  }
  // The generic result type does not narrow to the added `help` inside this function.
  const values: { help?: unknown } = parsed.values
  if (values.help === true) {
    console.log(usage)
    process.exit(0)
  }
  return parsed
}

/** `value` as a number ≥ `min`; a bad one prints the usage and exits 2. */
export function cliNumber (usage: string, name: string, value: string, min: number): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < min) cliFail(usage, `--${name} ${value}: expected a number >= ${min}`)
  return n
}

/** `value` if it is one of `choices`; otherwise prints the usage and exits 2. */
export function cliChoice<const C extends string> (usage: string, name: string, value: string, choices: readonly C[]): C {
  const found = choices.find((c) => c === value)
  if (found === undefined) cliFail(usage, `--${name} ${value}: expected one of ${choices.join(', ')}`)
  return found
}

/** A command line that parsed but makes no sense: the reason and the usage, exit 2. */
export function cliFail (usage: string, message: string): never {
  console.error(`${message}\n${usage}`)
  process.exit(2)
}
