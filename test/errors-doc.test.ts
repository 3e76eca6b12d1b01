// docs/errors.md must document every code in the registry, and nothing else.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ERRORS } from '../src/errors.js'
import { ROOT } from './helpers/server.js'

const doc = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8')
const documented = new Set([...doc.matchAll(/^\| `(FW_ERR_[A-Z_]+)` \| (\d+|start-up) \|/gm)].map((m) => m[1]))
for (const [code, spec] of Object.entries(ERRORS)) {
  t.ok(documented.has(code), `${code} is documented`)
  const row = new RegExp(`^\\| \`${code}\` \\| (\\d+|start-up) \\|`, 'm').exec(doc)
  if (row?.[1] !== 'start-up') t.equal(Number(row?.[1]), spec.status, `${code}: documented status matches`)
}
t.equal(documented.size, Object.keys(ERRORS).length, 'no stale codes in the doc')
