// Prometheus text exposition of what the admission table and the schedulers
// already count: per tenant (admitted, refused by reason, in flight, queued),
// per class (queued, batches, own/lent/idle worker time) and the gateway's
// refusal latency. Rendering reads shared counters; nothing here is on the
// request path except `recordRefusal`, one histogram increment.

import hdr from 'hdr-histogram-js'
import { REJECT_CODES, REJECT_REASONS, type AdmissionTable } from '../admission/admission-table.js'
import type { TenantRegistry } from '../control-plane/registry.js'
import type { ClassScheduler } from '../scheduling/class-scheduler.js'

export class GatewayMetrics {
  /** Refusal latency inside the server: arrival to response written, µs. */
  readonly refusalUs = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 2 })

  recordRefusal (us: number): void {
    this.refusalUs.recordValue(Math.max(1, Math.round(us)))
  }
}

function esc (s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')
}

export function renderMetrics (registry: TenantRegistry, admission: AdmissionTable, schedulers: ReadonlyMap<string, ClassScheduler>, gw: GatewayMetrics): string {
  const out: string[] = []
  const family = (name: string, type: string, help: string): void => { out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`) }

  family('fairway_tenant_admitted_total', 'counter', 'Requests admitted, per tenant.')
  for (const t of registry.tenants) out.push(`fairway_tenant_admitted_total{tenant="${esc(t.config.id)}",tier="${t.config.tier}"} ${admission.admitted(t.slot)}`)
  family('fairway_tenant_rejected_total', 'counter', 'Requests refused, per tenant and reason.')
  for (const t of registry.tenants) {
    for (let r = 1; r <= REJECT_CODES; r++) {
      out.push(`fairway_tenant_rejected_total{tenant="${esc(t.config.id)}",reason="${REJECT_REASONS[r] ?? ''}"} ${admission.rejected(t.slot, r as Parameters<AdmissionTable['rejected']>[1])}`)
    }
  }
  family('fairway_tenant_inflight', 'gauge', 'Requests admitted and not finished, per tenant.')
  for (const t of registry.tenants) out.push(`fairway_tenant_inflight{tenant="${esc(t.config.id)}"} ${admission.inflight(t.slot)}`)
  family('fairway_tenant_queued', 'gauge', 'Requests waiting for a worker, per tenant.')
  for (const t of registry.tenants) out.push(`fairway_tenant_queued{tenant="${esc(t.config.id)}"} ${admission.queued(t.slot)}`)

  const perClass = (name: string, type: string, help: string, value: (s: ClassScheduler) => number): void => {
    family(name, type, help)
    for (const [id, s] of schedulers) out.push(`${name}{class="${esc(id)}"} ${value(s)}`)
  }
  perClass('fairway_class_queued', 'gauge', 'Requests queued in the class.', (s) => s.queued)
  perClass('fairway_class_busy_workers', 'gauge', 'Workers of the class running a batch.', (s) => s.busyWorkers)
  perClass('fairway_class_batches_total', 'counter', 'Batches formed from the class queue.', (s) => s.stats.batches)
  perClass('fairway_class_rows_total', 'counter', 'Rows served from the class queue.', (s) => s.stats.rows)
  perClass('fairway_class_deadline_expired_total', 'counter', 'Queued requests dropped at their deadline.', (s) => s.stats.expired)
  perClass('fairway_class_own_busy_seconds_total', 'counter', 'Worker time spent on the class\'s own batches.', (s) => s.stats.ownBusyMs / 1000)
  perClass('fairway_class_lent_busy_seconds_total', 'counter', 'Worker time lent to other classes.', (s) => s.stats.lentBusyMs / 1000)
  perClass('fairway_class_idle_seconds_total', 'counter', 'Reserved worker time neither used nor lent.', (s) => s.idleMs() / 1000)
  perClass('fairway_class_borrowed_batches_total', 'counter', 'Batches of the class run on other classes\' workers.', (s) => s.stats.borrowedBatches)

  family('fairway_admission_refusal_seconds', 'summary', 'Time from request arrival to refusal written, inside the server.')
  for (const q of [0.5, 0.9, 0.99, 0.999]) out.push(`fairway_admission_refusal_seconds{quantile="${q}"} ${gw.refusalUs.getValueAtPercentile(q * 100) / 1e6}`)
  out.push(`fairway_admission_refusal_seconds_count ${gw.refusalUs.totalCount}`)
  return out.join('\n') + '\n'
}
