// Runs a benchmark case in a child process of this same script (libchdb
// binds one data directory per process, so every embedded-store case needs
// its own) and returns the JSON object the child printed last on stdout.

import { spawn } from 'node:child_process'

export function runChildJson<T> (script: string, args: readonly string[], what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [...process.execArgv, script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    c.stdout.on('data', (d: Buffer) => { out += d.toString() })
    c.on('error', reject)
    c.on('exit', (code) => {
      const line = out.trim().split('\n').at(-1) ?? ''
      if (code !== 0 || line === '') reject(new Error(`${what} exited ${code}: ${out}`))
      else resolve(JSON.parse(line) as T)
    })
  })
}
