import { COST_ERRORS } from './cost/cost-error.js'

// The one error registry of fairway. Every error a client or an operator can
// see has a stable `FW_ERR_<AREA>_<WHAT>` code, an HTTP status and a message
// template; docs/errors.md documents each one with how to fix it. Adding a code
// here without a row there is a bug.

export interface ErrorSpec {
  readonly status: number
  readonly message: string
}

export const ERRORS = {
  // --- gateway: routing and transport --------------------------------------
  FW_ERR_ROUTE_NOT_FOUND: { status: 404, message: 'no route for %s' },
  FW_ERR_METHOD_NOT_ALLOWED: { status: 405, message: 'method %s not allowed on this route' },
  FW_ERR_BODY_TOO_LARGE: { status: 413, message: 'request body exceeds the %s byte limit' },
  FW_ERR_BODY_MEDIA_TYPE: { status: 415, message: 'unsupported content type %s: use application/json or application/msgpack' },
  FW_ERR_BODY_MALFORMED: { status: 400, message: 'request body is not valid %s' },
  FW_ERR_SERVER_DRAINING: { status: 503, message: 'server is shutting down' },
  FW_ERR_SERVER_LISTEN: { status: 500, message: 'cannot listen on %s: the port is in use (by another fairway too: ports are not shared) or not permitted' },
  FW_ERR_WS_UPGRADE_REQUIRED: { status: 426, message: '/v2/ws is the WebSocket API: send a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)' },
  FW_ERR_WS_TOO_MANY_INFLIGHT: { status: 429, message: 'this WebSocket connection already has %s requests in flight' },
  FW_ERR_INTERNAL: { status: 500, message: 'internal error' },
  // --- authentication and tenancy --------------------------------------------
  FW_ERR_AUTH_MISSING: { status: 401, message: 'missing Authorization: Bearer <api key> header' },
  FW_ERR_AUTH_INVALID: { status: 401, message: 'API key is not valid' },
  FW_ERR_AUTH_ADMIN_REQUIRED: { status: 403, message: 'this endpoint needs an operator (admin) token' },
  FW_ERR_MODEL_NOT_FOUND: { status: 404, message: 'unknown model %s' },
  FW_ERR_MODEL_VERSION_NOT_FOUND: { status: 404, message: 'unknown version %s' },
  FW_ERR_MODEL_FORBIDDEN: { status: 403, message: 'model %s is not enabled for this tenant' },
  FW_ERR_MODEL_VERSION_FORBIDDEN: { status: 403, message: '%s' },
  // --- inference request validation ------------------------------------------
  FW_ERR_INFER_INPUT_INVALID: { status: 400, message: '%s' },
  FW_ERR_INFER_DATATYPE: { status: 400, message: '%s' },
  FW_ERR_INFER_SHAPE: { status: 400, message: '%s' },
  FW_ERR_INFER_ELEMENT_COUNT: { status: 400, message: '%s' },
  FW_ERR_INFER_BATCH_TOO_LARGE: { status: 400, message: '%s' },
  FW_ERR_INFER_OUTPUT_NOT_FINITE: { status: 422, message: 'model %s computed NaN or Infinity for this input' },
  // --- admission ---------------------------------------------------------------
  FW_ERR_ADMISSION_TENANT_RATE: { status: 429, message: 'tenant is over its rate limit of %s requests/s (burst %s)' },
  FW_ERR_ADMISSION_TENANT_CONCURRENCY: { status: 429, message: 'tenant is at its concurrency limit of %s in-flight requests' },
  FW_ERR_ADMISSION_TENANT_QUEUE_FULL: { status: 429, message: 'tenant already has %s requests queued (its queue-depth limit)' },
  FW_ERR_ADMISSION_CLASS_OVERLOADED: { status: 503, message: 'service class %s is overloaded; request shed' },
  FW_ERR_DEADLINE_EXCEEDED: { status: 504, message: 'request deadline of %s ms expired before inference ran' },
  // --- runtime -----------------------------------------------------------------
  FW_ERR_RUNTIME_INFERENCE_FAILED: { status: 500, message: 'inference failed: %s' },
  FW_ERR_RUNTIME_PROVIDER_UNAVAILABLE: { status: 500, message: '%s' },
  FW_ERR_RUNTIME_MODEL_LOAD: { status: 500, message: '%s' },
  // --- cost (the pipeline's own codes are defined next to it, in src/cost/cost-error.ts)
  FW_ERR_COST_DISABLED: { status: 404, message: 'cost events are disabled on this server (cost.enabled is false)' },
  ...COST_ERRORS,
  // --- start-up ------------------------------------------------------------------
  FW_ERR_CONFIG_INVALID: { status: 500, message: 'invalid platform config %s' },
  FW_ERR_UWS_FALLBACK: { status: 500, message: 'uWebSockets.js native addon did not load (%s); refusing to run on the pure-JS fallback' },
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

/** `%s` placeholders filled in order (a missing argument is empty). */
function format (message: string, args: ReadonlyArray<string | number>): string {
  const parts = message.split('%s')
  let out = parts[0] as string
  for (let i = 1; i < parts.length; i++) out += String(args[i - 1] ?? '') + (parts[i] as string)
  return out
}

/** An error with a stable code; the gateway turns it into an OIP error body. */
export class FairwayError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number
  /** Extra machine-readable fields for the response body (e.g. the list of config problems). */
  readonly details: unknown
  /** Admission refusals: the machine-readable reason (tenant_rate, class_overloaded, ...). */
  reason: string | null = null
  /** Admission refusals: when a retry could succeed, in ms. */
  retryAfterMs: number | null = null

  constructor (code: ErrorCode, args: ReadonlyArray<string | number> = [], details?: unknown) {
    const spec: ErrorSpec = ERRORS[code]
    // No stack frames: a coded error is an answer to a client (a refusal, at
    // thousands a second under an aggressor), not a bug report. V8's stack
    // capture and a regex replace made one cost ~5.5 µs here (measured).
    // Unexpected errors keep their own stacks (sendError logs those).
    const message = format(spec.message, args) // before the limit changes: nothing may throw in between
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(message)
    Error.stackTraceLimit = limit
    this.name = 'FairwayError'
    this.code = code
    this.statusCode = spec.status
    this.details = details
  }
}

/** A FairwayError carrying another coded error's code and message (e.g. a CostError). */
export function asFairwayError (err: unknown): FairwayError {
  if (err instanceof FairwayError) return err
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && code in ERRORS) {
    const e = new FairwayError(code as ErrorCode)
    e.message = (err as Error).message
    return e
  }
  return new FairwayError('FW_ERR_INTERNAL')
}

export function fwError (code: ErrorCode, ...args: Array<string | number>): FairwayError {
  return new FairwayError(code, args)
}
