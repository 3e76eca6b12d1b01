#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm run build` (run by npm install).
import { existsSync } from 'node:fs'

const entry = new URL('../dist/src/cli/fairway.js', import.meta.url)
if (!existsSync(entry)) {
  console.error('fairway: dist/ is missing; run `npm run build` (npm install runs it)')
  process.exit(1)
}
await import(entry.href)
