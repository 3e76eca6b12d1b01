// API keys are stored as SHA-256 digests only. A key is high-entropy random
// text, so a plain (unsalted) fast hash is the right tool: it is what GitHub
// and Stripe-style token stores do, and it costs ~1 µs per lookup.

import { createHash, randomBytes } from 'node:crypto'

export function hashApiKey (key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex')
}

/** A new random key with a recognisable prefix (for `fairway keys new`). */
export function newApiKey (tenantId: string): string {
  return `fw_${tenantId}_${randomBytes(24).toString('base64url')}`
}
