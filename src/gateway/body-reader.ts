// Buffers a request body from uWS's onData stream, with a hard size cap.
// uWS hands out chunks that are only valid during the callback, so each one
// is copied; a single-chunk body (the common case) is copied exactly once.

import type { HttpResponse } from '@trufflesuite/uws-js-unofficial'
import { FairwayError, fwError } from '../errors.js'

export function readBody (res: HttpResponse, maxBytes: number, cb: (err: FairwayError | null, body: Buffer) => void): void {
  let chunks: Buffer[] | null = null
  let size = 0
  let finished = false
  res.onData((chunk, isLast) => {
    if (finished) return
    size += chunk.byteLength
    if (size > maxBytes) {
      finished = true
      cb(fwError('FW_ERR_BODY_TOO_LARGE', maxBytes), Buffer.alloc(0))
      return
    }
    const copy = Buffer.from(new Uint8Array(chunk).slice())
    if (isLast) {
      finished = true
      cb(null, chunks === null ? copy : Buffer.concat([...chunks, copy], size))
    } else {
      (chunks ??= []).push(copy)
    }
  })
}
