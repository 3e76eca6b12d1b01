// The transport-independent part of an inference request: deadline budget,
// admission, scheduling and the exactly-once release of what admission took.
// HTTP and WebSocket both call `submit`, so every policy applies the same way
// to a request and to a WebSocket message.

import { Reject, REJECT_REASONS, type AdmissionTable } from '../admission/admission-table.js'
import type { Route } from '../control-plane/registry.js'
import { FairwayError, fwError } from '../errors.js'
import type { BatchInfo, ClassScheduler, Job } from '../scheduling/class-scheduler.js'
import type { GatewayMetrics } from '../telemetry/metrics.js'
import type { CostRecorder } from './cost-recorder.js'
import type { InferRequest } from './oip-codec.js'

/** Called exactly once per admitted request; `output` is this request's rows only. */
export type InferenceCallback = (err: FairwayError | null, output: Float32Array | null) => void

export class InferenceService {
  readonly admission: AdmissionTable
  readonly schedulers: ReadonlyMap<string, ClassScheduler>
  readonly metrics: GatewayMetrics
  /** Null when cost events are off. */
  readonly cost: CostRecorder | null

  constructor (admission: AdmissionTable, schedulers: ReadonlyMap<string, ClassScheduler>, metrics: GatewayMetrics, cost: CostRecorder | null) {
    this.admission = admission
    this.schedulers = schedulers
    this.metrics = metrics
    this.cost = cost
  }

  /**
   * Admits and queues one request, or throws the coded refusal (nothing is
   * then held). `clientTimeoutMs` (header or transport level) and
   * `request.timeoutMs` may lower the tenant's budget, never raise it.
   * `arrived` is performance.now() at arrival.
   */
  submit (route: Route, surface: string, request: InferRequest, clientTimeoutMs: number | null, arrived: number, cb: InferenceCallback): void {
    this.admit(route, surface, arrived)
    this.enqueue(route, surface, request, clientTimeoutMs, arrived, cb)
  }

  /**
   * The admission decision alone, before the body is read: a refused request
   * costs no body buffering or parsing. On success the caller owns one
   * admission and must hand it to `enqueue` or give it back with `cancel`.
   */
  admit (route: Route, surface: string, arrived: number): void {
    const scheduler = this.schedulers.get(route.serviceClass.id)
    if (scheduler === undefined) throw fwError('FW_ERR_INTERNAL')
    const admission = this.admission
    const verdict = admission.admit(route.tenant.slot, route.classSlot, admission.nowUs())
    if (verdict !== Reject.None) {
      const err = this.refusal(verdict, route, scheduler)
      this.cost?.record(route, surface, arrived, 0, err.reason ?? 'refused', err.statusCode, null)
      throw err
    }
  }

  /**
   * Gives back an admission that will not be enqueued: `err` for a bad body,
   * null when the client went away before sending all of it.
   */
  cancel (route: Route, surface: string, arrived: number, err: FairwayError | null): void {
    this.admission.dequeued(route.tenant.slot, route.classSlot)
    this.admission.release(route.tenant.slot)
    this.cost?.record(route, surface, arrived, 0, err === null ? 'client_gone' : 'bad_request', err === null ? 499 : err.statusCode, null)
  }

  /** Queues an admitted request; `cb` is called exactly once. */
  enqueue (route: Route, surface: string, request: InferRequest, clientTimeoutMs: number | null, arrived: number, cb: InferenceCallback): void {
    let budget = route.tenant.config.limits.timeoutMs
    if (clientTimeoutMs !== null) budget = Math.min(budget, clientTimeoutMs)
    if (request.timeoutMs !== null) budget = Math.min(budget, request.timeoutMs)
    const scheduler = this.schedulers.get(route.serviceClass.id) as ClassScheduler // checked by admit
    const slot = route.tenant.slot
    const admission = this.admission
    const outDim = route.model.output.shape[1] ?? 0
    const cost = this.cost
    const job: Job = {
      flow: slot,
      cost: 0,
      route,
      rows: request.rows,
      input: request.data,
      enqueuedAt: arrived,
      deadline: arrived + budget,
      // The scheduler calls done exactly once; the in-flight slot is released
      // here and only here, whatever the outcome (success, error, deadline,
      // client gone, worker crash).
      done (err: FairwayError | null, output: Float32Array | null, offsetRows: number, batch: BatchInfo | null): void {
        admission.release(slot)
        if (err !== null || output === null) {
          const e = err ?? fwError('FW_ERR_INTERNAL')
          cost?.record(route, surface, arrived, request.rows, e.reason ?? 'error', e.statusCode, null)
          cb(e, null)
        } else {
          const out = output.subarray(offsetRows * outDim, (offsetRows + request.rows) * outDim)
          if (!allFinite(out)) {
            // It ran (and is billed as such), but JSON cannot carry NaN or
            // Infinity; MessagePack answers the same, so encodings agree.
            const e = fwError('FW_ERR_INFER_OUTPUT_NOT_FINITE', route.model.id)
            cost?.record(route, surface, arrived, request.rows, 'output_not_finite', e.statusCode, batch)
            cb(e, null)
            return
          }
          cost?.record(route, surface, arrived, request.rows, 'ok', 200, batch)
          cb(null, out)
        }
      },
    }
    scheduler.enqueue(job)
  }

  /** The coded error for an admission refusal, with its reason and a retry hint. */
  private refusal (verdict: Reject, route: Route, scheduler: ClassScheduler): FairwayError {
    const limits = route.tenant.config.limits
    let err: FairwayError
    let retryMs = Math.max(1, Math.round(scheduler.estimatedDrainMs()))
    switch (verdict) {
      case Reject.TenantRate:
        err = fwError('FW_ERR_ADMISSION_TENANT_RATE', limits.ratePerSecond, limits.burst)
        retryMs = Math.max(1, Math.ceil(this.admission.retryAfterUs / 1000))
        break
      case Reject.TenantConcurrency: err = fwError('FW_ERR_ADMISSION_TENANT_CONCURRENCY', limits.concurrency); break
      case Reject.TenantQueueFull: err = fwError('FW_ERR_ADMISSION_TENANT_QUEUE_FULL', limits.queueDepth); break
      default: err = fwError('FW_ERR_ADMISSION_CLASS_OVERLOADED', route.serviceClass.id)
    }
    err.reason = REJECT_REASONS[verdict]
    err.retryAfterMs = retryMs
    return err
  }
}

/** Parses a client timeout header value; '' means none. */
export function parseClientTimeout (value: string): number | null {
  if (value === '') return null
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw fwError('FW_ERR_INFER_INPUT_INVALID', 'x-request-timeout-ms must be a positive number')
  return n
}

function allFinite (a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) {
    const v = a[i] as number
    if (v - v !== 0) return false
  }
  return true
}
