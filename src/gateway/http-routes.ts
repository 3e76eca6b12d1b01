// The Open Inference Protocol v2 HTTP surface on a uWS app: health, server and
// model metadata, and inference. Authentication and routing come from the
// tenant registry; admission from the shared counters; execution from the
// per-class schedulers.

import { performance } from 'node:perf_hooks'
import type { HttpRequest, HttpResponse, TemplatedApp } from '@trufflesuite/uws-js-unofficial'
import type { Route, TenantRegistry } from '../control-plane/registry.js'
import { asFairwayError, FairwayError, fwError } from '../errors.js'
import { renderMetrics } from '../telemetry/metrics.js'
import { parseClientTimeout, type InferenceService } from './inference-service.js'
import { readBody } from './body-reader.js'
import { JSON_TYPE, MSGPACK_TYPE, send, sendError, sendValue, type Exchange } from './http-reply.js'
import { decodeMsgpack, encodeJsonResponse, modelMetadata, msgpackResponse, parseInferRequest, type InferRequest } from './oip-codec.js'

/** Route template recorded in cost events for HTTP inference. */
const SURFACE = 'http:/v2/models/{m}/infer'

export interface GatewayState {
  ready: boolean
  draining: boolean
}

export interface GatewayDeps {
  readonly registry: TenantRegistry
  readonly service: InferenceService
  readonly state: GatewayState
  readonly version: string
}

function exchange (res: HttpResponse, req: HttpRequest): Exchange {
  const ex: Exchange = { res, aborted: false, msgpack: req.getHeader('accept').includes(MSGPACK_TYPE), onAbort: null }
  // Must be attached before any await/async continuation: uWS frees `res`
  // when the client goes away, and writing to it afterwards is a crash.
  res.onAborted(() => {
    ex.aborted = true
    ex.onAbort?.()
  })
  return ex
}

/**
 * The body's media type, case-insensitive and without parameters
 * (`charset=…`); none at all is read as JSON. Null: neither JSON nor
 * MessagePack. The exact lower-case names are checked first, so the usual
 * request allocates nothing here.
 */
function mediaType (header: string): typeof JSON_TYPE | typeof MSGPACK_TYPE | null {
  if (header === JSON_TYPE || header === '') return JSON_TYPE
  if (header === MSGPACK_TYPE) return MSGPACK_TYPE
  const semi = header.indexOf(';')
  const type = (semi < 0 ? header : header.slice(0, semi)).trim().toLowerCase()
  if (type === JSON_TYPE) return JSON_TYPE
  if (type === MSGPACK_TYPE || type === 'application/x-msgpack') return MSGPACK_TYPE
  return null
}

export function registerRoutes (app: TemplatedApp, deps: GatewayDeps): void {
  const { registry, service, state } = deps
  const maxBody = registry.config.server.maxBodyBytes

  app.get('/v2/health/live', (res, req) => {
    sendValue(exchange(res, req), 200, { live: true })
  })
  app.get('/v2/health/ready', (res, req) => {
    const ok = state.ready && !state.draining
    sendValue(exchange(res, req), ok ? 200 : 503, { ready: ok })
  })
  app.get('/metrics', (res, req) => {
    const ex = exchange(res, req)
    const auth = req.getHeader('authorization')
    if (auth === '') { sendError(ex, fwError('FW_ERR_AUTH_MISSING')); return }
    if (!registry.isAdmin(auth)) { sendError(ex, fwError('FW_ERR_AUTH_ADMIN_REQUIRED')); return }
    send(ex, 200, renderMetrics(registry, service.admission, service.schedulers, service.metrics), 'text/plain; version=0.0.4')
  })
  // Read-only SQL over the cost store, for operators (ClickHouse readonly=1).
  app.post('/v2/admin/sql', (res, req) => {
    const ex = exchange(res, req)
    const auth = req.getHeader('authorization')
    const format = req.getHeader('accept').includes('text/csv') ? 'CSVWithNames' : 'JSONEachRow'
    if (auth === '') { sendError(ex, fwError('FW_ERR_AUTH_MISSING'), true); return }
    if (!registry.isAdmin(auth)) { sendError(ex, fwError('FW_ERR_AUTH_ADMIN_REQUIRED'), true); return }
    const cost = service.cost
    if (cost === null) { sendError(ex, fwError('FW_ERR_COST_DISABLED'), true); return }
    readBody(res, 64 * 1024, (err, body) => {
      if (err !== null) { sendError(ex, err, true); return }
      cost.pipeline.query(body.toString('utf8'), format, { readonly: true }).then((text) => {
        send(ex, 200, text, format === 'CSVWithNames' ? 'text/csv' : 'application/x-ndjson')
      }, (e: unknown) => { sendError(ex, asFairwayError(e)) })
    })
  })
  app.get('/v2', (res, req) => {
    sendValue(exchange(res, req), 200, { name: 'fairway', version: deps.version, extensions: ['model_repository_tenancy'] })
  })

  const metadata = (withVersion: boolean, readyOnly: boolean) => (res: HttpResponse, req: HttpRequest): void => {
    const ex = exchange(res, req)
    try {
      const tenant = registry.authenticate(req.getHeader('authorization'))
      const route = registry.resolve(tenant, req.getParameter(0) ?? '', withVersion ? req.getParameter(1) ?? '' : null)
      if (readyOnly) sendValue(ex, state.ready ? 200 : 503, { name: route.model.id, version: route.version.version, ready: state.ready })
      else sendValue(ex, 200, modelMetadata(route.model, route.version.version))
    } catch (err) {
      sendError(ex, err)
    }
  }
  app.get('/v2/models/:model', metadata(false, false))
  app.get('/v2/models/:model/ready', metadata(false, true))
  app.get('/v2/models/:model/versions/:version', metadata(true, false))
  app.get('/v2/models/:model/versions/:version/ready', metadata(true, true))

  const infer = (withVersion: boolean) => (res: HttpResponse, req: HttpRequest): void => {
    const arrived = performance.now()
    const ex = exchange(res, req)
    // Everything read from `req` must be read now: it is invalid after return.
    const contentType = req.getHeader('content-type')
    const auth = req.getHeader('authorization')
    const headerTimeout = req.getHeader('x-request-timeout-ms')
    const modelId = req.getParameter(0) ?? ''
    const version = withVersion ? req.getParameter(1) ?? '' : null
    const media = mediaType(contentType)
    const isMsgpack = media === MSGPACK_TYPE
    if (isMsgpack) ex.msgpack = true
    if (state.draining) {
      sendError(ex, fwError('FW_ERR_SERVER_DRAINING'), true)
      return
    }
    let route: Route
    try {
      route = registry.resolve(registry.authenticate(auth), modelId, version)
    } catch (err) {
      // The body is not read; close so the rest of it cannot be taken for a request.
      sendError(ex, err, true)
      return
    }
    // The tenant is known from here: every answer below is a cost event.
    let clientTimeout: number | null
    try {
      if (media === null) throw fwError('FW_ERR_BODY_MEDIA_TYPE', contentType)
      clientTimeout = parseClientTimeout(headerTimeout)
    } catch (err) {
      const e = asFairwayError(err)
      service.cost?.record(route, SURFACE, arrived, 0, 'bad_request', e.statusCode, null)
      sendError(ex, e, true)
      return
    }
    // Admission before the body: a refusal costs no buffering or parsing,
    // which is what keeps an aggressor's excess cheap. (uWS skips the unread
    // body and keeps the connection usable.)
    try {
      service.admit(route, SURFACE, arrived)
    } catch (err) {
      sendError(ex, err)
      service.metrics.recordRefusal((performance.now() - arrived) * 1000)
      return
    }
    // From here this request holds one admission, given back exactly once:
    // to the scheduler (enqueue) or by cancel (bad body, client gone).
    let held = true
    const giveBack = (err: FairwayError | null): void => {
      if (!held) return
      held = false
      service.cancel(route, SURFACE, arrived, err)
    }
    ex.onAbort = () => { giveBack(null) }
    readBody(res, maxBody, (err, body) => {
      if (!held) return // the client went away while sending
      if (err !== null) { giveBack(err); sendError(ex, err, true); return }
      let request: InferRequest
      try {
        request = decodeInfer(body, isMsgpack, route)
      } catch (e) {
        giveBack(e instanceof FairwayError ? e : fwError('FW_ERR_INTERNAL'))
        sendError(ex, e)
        return
      }
      held = false
      ex.onAbort = null
      service.enqueue(route, SURFACE, request, clientTimeout, arrived, (e, out) => {
        if (e !== null || out === null) { sendError(ex, e); return }
        if (ex.aborted) return
        if (ex.msgpack) send(ex, 200, msgpackResponse(route.model, route.version.version, request.id, request.rows, out), MSGPACK_TYPE)
        else send(ex, 200, encodeJsonResponse(route.model, route.version.version, request.id, request.rows, out), JSON_TYPE)
      })
    })
  }

  function decodeInfer (body: Buffer, isMsgpack: boolean, route: Route): InferRequest {
    let decoded: unknown
    try {
      decoded = isMsgpack ? decodeMsgpack(body) : JSON.parse(body.toString('utf8'))
    } catch {
      throw fwError('FW_ERR_BODY_MALFORMED', isMsgpack ? 'MessagePack' : 'JSON')
    }
    return parseInferRequest(decoded, route.model)
  }

  app.post('/v2/models/:model/infer', infer(false))
  app.post('/v2/models/:model/versions/:version/infer', infer(true))

  app.any('/*', (res, req) => {
    const ex = exchange(res, req)
    const method = req.getMethod().toUpperCase()
    const url = req.getUrl()
    // uWS routes only upgrade requests to the WebSocket handler.
    if (url === '/v2/ws') { sendError(ex, fwError('FW_ERR_WS_UPGRADE_REQUIRED')); return }
    const known = /^\/v2(\/health\/(live|ready)|\/models\/[^/]+(\/versions\/[^/]+)?(\/ready|\/infer)?|\/admin\/sql)?$|^\/metrics$/.test(url)
    sendError(ex, known ? fwError('FW_ERR_METHOD_NOT_ALLOWED', method) : fwError('FW_ERR_ROUTE_NOT_FOUND', `${method} ${url}`))
  })
}
