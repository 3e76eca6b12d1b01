// The `fairway` command: start the server, check a config, hash API keys.

import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { hashApiKey, newApiKey } from '../control-plane/api-keys.js'
import { runCostReplay, runSql } from './cost-commands.js'
import { checkConfigFile, loadConfigFile } from '../control-plane/load-config.js'
import { FairwayError } from '../errors.js'
import { packageRoot } from '../runtime/affinity.js'
import { startServer, VERSION } from '../server.js'

const USAGE = `fairway ${VERSION}: multi-tenant ML inference server

usage:
  fairway start [--config FILE] [--host HOST] [--port PORT] [--no-batching]
      serve; the config defaults to $FAIRWAY_CONFIG or the demo platform;
      --no-batching sends each request as its own worker task (benchmarks only)
  fairway config check FILE
      validate a platform config; prints every problem, exits 1 if any
  fairway keys hash KEY
      print the "sha256:..." form of an API key, for a tenant's apiKeys
  fairway keys new TENANT
      print a new random API key and its hash
  fairway sql "<query>" [--format table|json|csv|tsv] [--data-dir DIR | --url URL]
      query the cost store (read-only); see docs/cost.md
  fairway cost replay --spool DIR [--data-dir DIR | --url URL]
      insert a kept spool into a cost store, exactly once
`

export const DEMO_CONFIG = join(packageRoot(), 'config', 'demo-platform.json')

async function main (argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case 'start': return await start(rest)
    case 'config': {
      const file = rest[1]
      if (rest[0] !== 'check' || file === undefined) break
      const res = checkConfigFile(file)
      if (res.ok) {
        const c = res.config
        console.log(`${file}: ok (${c.tenants.size} tenants, ${c.models.size} models, ${c.serviceClasses.size} service classes)`)
        return 0
      }
      console.error(`${file}: ${res.problems.length} problem(s)`)
      for (const p of res.problems) console.error(`  ${p.path}: ${p.message}`)
      return 1
    }
    case 'keys': {
      if (rest[0] === 'hash' && rest[1] !== undefined) { console.log(`sha256:${hashApiKey(rest[1])}`); return 0 }
      if (rest[0] === 'new' && rest[1] !== undefined) {
        const key = newApiKey(rest[1])
        console.log(`key:  ${key}\nhash: sha256:${hashApiKey(key)}`)
        return 0
      }
      break
    }
    case 'sql': return await runSql(rest)
    case 'cost':
      if (rest[0] === 'replay') return await runCostReplay(rest.slice(1))
      break
    case '--version': console.log(VERSION); return 0
    case undefined: case 'help': case '--help': case '-h': console.log(USAGE); return 0
  }
  console.error(USAGE)
  return 2
}

async function start (args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'no-batching': { type: 'boolean' } },
    strict: true,
  })
  const file = values.config ?? process.env.FAIRWAY_CONFIG ?? DEMO_CONFIG
  const config = loadConfigFile(file)
  let port: number | undefined
  if (values.port !== undefined) {
    port = Number(values.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be an integer 0..65535, got ${values.port}`)
  }
  const server = await startServer({
    config,
    batching: values['no-batching'] !== true,
    ...(port === undefined ? {} : { port }),
    ...(values.host === undefined ? {} : { host: values.host }),
  })
  const classes = [...server.schedulers.values()].map(({ pool: { serviceClass: sc, capacity } }) =>
    sc.runtime === 'inline' ? `${sc.id}[inline on the gateway thread]` : `${sc.id}[cpus ${sc.cpus.join(',')} x${capacity}${sc.nice === 0 ? '' : ` nice ${sc.nice}`}]`)
  console.log(`fairway ${VERSION} listening on http://${server.host}:${server.port}`)
  console.log(`  config ${file}: ${config.tenants.size} tenants, ${config.models.size} models; pools ${classes.join(' ')}`)
  await new Promise<void>((resolve) => {
    // `on`, not `once`: a second signal while draining must not fall through
    // to Node's default (exit at once), which cut in-flight requests and lost
    // the cost events of answered ones. SIGKILL remains the way to force it.
    let draining = false
    const stop = (sig: string): void => {
      if (draining) {
        console.log(`fairway: ${sig}: already draining (drainTimeoutMs ${config.server.drainTimeoutMs}); send SIGKILL to stop at once`)
        return
      }
      draining = true
      console.log(`fairway: ${sig}: draining in-flight requests`)
      server.close().then(resolve, (err: unknown) => { console.error(err); resolve() })
    }
    process.on('SIGINT', () => { stop('SIGINT') })
    process.on('SIGTERM', () => { stop('SIGTERM') })
  })
  console.log('fairway: stopped')
  return 0
}

main(process.argv.slice(2)).then((code) => { process.exit(code) }, (err: unknown) => {
  // Any coded error (FairwayError, CostError) prints its code.
  const code = (err as { code?: unknown } | null)?.code
  if (err instanceof FairwayError || (typeof code === 'string' && code.startsWith('FW_ERR_'))) console.error(`fairway: ${String(code)}: ${(err as Error).message}`)
  else console.error(`fairway: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
})
