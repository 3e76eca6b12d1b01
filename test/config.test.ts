// The platform config: validation names the bad field and why, the CLI prints
// the same problems, and the server refuses to start on an invalid file.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkConfig, checkConfigFile } from '../src/control-plane/load-config.js'
import { TenantRegistry } from '../src/control-plane/registry.js'
import { configFrom, demoRaw, DEMO_CONFIG_FILE, ROOT } from './helpers/server.js'
import { dirname } from 'node:path'

const base = dirname(DEMO_CONFIG_FILE)

function problems (mutate: (raw: Record<string, any>) => void): Array<{ path: string, message: string }> {
  const raw = demoRaw()
  mutate(raw)
  const res = checkConfig(raw, base)
  return res.ok ? [] : [...res.problems]
}

t.test('the demo config is valid and covers all four tiers', async (t) => {
  const res = checkConfigFile(DEMO_CONFIG_FILE)
  t.ok(res.ok)
  if (!res.ok) return
  t.same(new Set([...res.config.tenants.values()].map((x) => x.tier)), new Set(['shared', 'premium_shared', 'semi_isolated', 'dedicated']))
  t.equal(res.config.models.size, 3)
  const acme = res.config.tenants.get('acme')
  t.equal(acme?.models.get('tiny-classifier'), '1', '"default" resolves to the model default version')
})

t.test('each bad field is named with the reason', async (t) => {
  const cases: Array<[string, (r: Record<string, any>) => void, string, RegExp]> = [
    ['plaintext key', (r) => { r.tenants.acme.apiKeys = ['secret'] }, '$.tenants.acme.apiKeys[0]', /sha256/],
    ['unknown tier', (r) => { r.tenants.acme.tier = 'gold' }, '$.tenants.acme.tier', /one of shared, premium_shared/],
    ['unknown queue class', (r) => { r.tenants.acme.queueClass = 'vip' }, '$.tenants.acme.queueClass', /names no service class/],
    ['dedicated class for shared tenant', (r) => { r.tenants.globex.queueClass = 'dedicated-wayne' }, '$.tenants.globex.queueClass', /dedicated/],
    ['unknown model for tenant', (r) => { r.tenants.acme.models.gpt = '1' }, '$.tenants.acme.models.gpt', /names no model/],
    ['unknown version for tenant', (r) => { r.tenants.acme.models.ranker = '7' }, '$.tenants.acme.models.ranker', /version of ranker/],
    ['negative concurrency', (r) => { r.tenants.acme.limits.concurrency = -1 }, '$.tenants.acme.limits.concurrency', />= 1/],
    ['missing timeout', (r) => { delete r.tenants.acme.limits.timeoutMs }, '$.tenants.acme.limits.timeoutMs', /required/],
    ['typo field', (r) => { r.tenants.acme.limts = {} }, '$.tenants.acme.limts', /unknown field/],
    ['same key twice', (r) => { r.tenants.globex.apiKeys = r.tenants.acme.apiKeys }, '$.tenants.globex.apiKeys[0]', /also given to tenant acme/],
    ['bad cpus', (r) => { r.serviceClasses.shared.cpus = [] }, '$.serviceClasses.shared.cpus', /non-empty array/],
    ['negative nice (needs privilege)', (r) => { r.serviceClasses.shared.nice = -5 }, '$.serviceClasses.shared.nice', /./],
    ['nice above 19', (r) => { r.serviceClasses.shared.nice = 20 }, '$.serviceClasses.shared.nice', /./],
    ['bad device', (r) => { r.serviceClasses.shared.device = 'tpu' }, '$.serviceClasses.shared.device', /one of cpu, cuda/],
    ['model pinned to unknown class', (r) => { r.models.ranker.serviceClass = 'gpu' }, '$.models.ranker.serviceClass', /names no service class/],
    ['bad default version', (r) => { r.models.ranker.defaultVersion = '3' }, '$.models.ranker.defaultVersion', /names no version/],
    ['bad input shape', (r) => { r.models.ranker.input.shape = [256] }, '$.models.ranker.input.shape', /\[-1, N\]/],
    ['missing artifact file', (r) => { r.models.ranker.versions['1'].artifact = 'nope/model.onnx' }, '$.models.ranker.versions.1.artifact', /does not exist/],
    ['rows over batch', (r) => { r.models.ranker.batching = { maxBatchSize: 4, maxRowsPerRequest: 8 } }, '$.models.ranker.batching.maxRowsPerRequest', /<= maxBatchSize/],
    ['batching window too long', (r) => { r.models.ranker.batching.maxQueueDelayUs = 100001 }, '$.models.ranker.batching.maxQueueDelayUs', /<= 100000/],
    ['batching window fractional', (r) => { r.models.ranker.batching.maxQueueDelayUs = 2.5 }, '$.models.ranker.batching.maxQueueDelayUs', /integer/],
    ['batching window negative', (r) => { r.models.ranker.batching.maxQueueDelayUs = -1 }, '$.models.ranker.batching.maxQueueDelayUs', />= 0/],
    ['tenant batch wait not a number', (r) => { r.tenants.acme.limits.maxBatchWaitUs = '500' }, '$.tenants.acme.limits.maxBatchWaitUs', /must be a number/],
    ['tenant batch wait negative', (r) => { r.tenants.acme.limits.maxBatchWaitUs = -5 }, '$.tenants.acme.limits.maxBatchWaitUs', />= 0/],
    ['tenant batch wait too long', (r) => { r.tenants.acme.limits.maxBatchWaitUs = 100001 }, '$.tenants.acme.limits.maxBatchWaitUs', /<= 100000/],
    ['a tenant key that is also an admin token', (r) => { r.admin.tokens = [...r.admin.tokens, r.tenants.acme.apiKeys[0]] }, '$.tenants.acme.apiKeys[0]', /admin\.tokens/],
    ['model pinned to a dedicated class', (r) => { r.models.ranker.serviceClass = 'dedicated-wayne' }, '$.models.ranker.serviceClass', /dedicated/],
    ['queue depth past the counters', (r) => { r.tenants.acme.limits.queueDepth = 1e12 }, '$.tenants.acme.limits.queueDepth', /<= 1000000/],
    ['a rate too small to count', (r) => { r.tenants.acme.limits.ratePerSecond = 0.0004 }, '$.tenants.acme.limits.ratePerSecond', /at least 0\.001/],
    ['a rate the µs counters would round', (r) => { r.tenants.acme.limits.ratePerSecond = 700_000 }, '$.tenants.acme.limits.ratePerSecond', /enforced as 1000000/],
    ['a burst past the counters', (r) => { r.tenants.acme.limits.ratePerSecond = 0.5; r.tenants.acme.limits.burst = 1000 }, '$.tenants.acme.limits.burst', /s of credit/],
    ['a section set to null', (r) => { r.server = null }, '$.server', /object/],
    ['a version given as a number', (r) => { r.tenants.acme.models.ranker = 1 }, '$.tenants.acme.models.ranker', /a string: "1"/],
  ]
  for (const [name, mutate, path, why] of cases) {
    const p = problems(mutate)
    const hit = p.find((x) => x.path === path)
    t.ok(hit, `${name}: reported at ${path} (got ${JSON.stringify(p)})`)
    t.match(hit?.message ?? '', why, `${name}: says why`)
  }
})

t.test('batching window: default 0, capped per tenant, precomputed per route', async (t) => {
  const plain = configFrom(demoRaw())
  t.equal(plain.models.get('ranker')?.maxQueueDelayUs, 0, 'no window unless configured')
  t.equal(plain.tenants.get('acme')?.limits.maxBatchWaitUs, null, 'no tenant cap unless configured')
  const raw = demoRaw()
  raw.models['tiny-classifier'].batching.maxQueueDelayUs = 2000
  raw.tenants.acme.limits.maxBatchWaitUs = 500
  raw.tenants.globex.limits.maxBatchWaitUs = 0
  raw.tenants.initech.limits.maxBatchWaitUs = 100000
  const reg = new TenantRegistry(configFrom(raw))
  const waitMs = (tenant: string, model: string): number | undefined => reg.tenantById(tenant)?.routes.get(model)?.maxBatchWaitMs
  t.equal(waitMs('acme', 'tiny-classifier'), 0.5, 'the tenant cap shortens the model window')
  t.equal(waitMs('globex', 'tiny-classifier'), 0, 'a cap of 0: never held')
  t.equal(waitMs('initech', 'tiny-classifier'), 2, 'a cap above the window does not lengthen it')
  t.equal(waitMs('umbrella', 'tiny-classifier'), 2, 'no cap: the model window')
  t.equal(waitMs('acme', 'ranker'), 0, 'a model without a window holds nobody')
})

t.test('cost.insertMs: 30 s embedded (queries insert what is pending first), 3 s for a server, or as given', async (t) => {
  const cost = (c: Record<string, unknown>): number | undefined => {
    const raw = demoRaw()
    raw.cost = c
    const res = checkConfig(raw, base)
    return res.ok ? res.config.cost.insertMs : undefined
  }
  t.equal(cost({}), 30_000, 'embedded default')
  t.equal(cost({ backend: 'http', url: 'http://127.0.0.1:8123' }), 3_000, 'server default')
  t.equal(cost({ insertMs: 500 }), 500)
  t.equal(cost({ insertMs: -1 }), undefined, 'a negative value is refused')
})

t.test('a key twice in one object is a problem, not a silent overwrite', async (t) => {
  const dir = t.testdir({})
  const raw = demoRaw()
  raw.modelRepository = join(ROOT, 'models')
  // Two "acme" tenants: JSON.parse would keep the second and drop the first.
  const text = JSON.stringify(raw).replace('"tenants":{', `"tenants":{"acme":${JSON.stringify(raw.tenants.acme)},`)
  const file = join(dir, 'dup.json')
  writeFileSync(file, text)
  const res = checkConfigFile(file)
  t.notOk(res.ok)
  t.same(res.ok ? [] : res.problems.map((p) => p.path), ['$.tenants.acme'])
  writeFileSync(file, JSON.stringify(raw))
  t.ok(checkConfigFile(file).ok, 'the same config without the repeat is fine')
})

t.test('all problems are reported at once', async (t) => {
  const p = problems((r) => { r.tenants.acme.tier = 'x'; r.tenants.globex.limits.burst = 0; r.server.port = 70000 })
  t.equal(p.length, 3)
})

t.test('fairway config check prints the problems and exits 1; start refuses', async (t) => {
  const dir = t.testdir({})
  const bad = demoRaw()
  bad.tenants.acme.tier = 'gold'
  bad.modelRepository = join(ROOT, 'models')
  const file = join(dir, 'bad.json')
  writeFileSync(file, JSON.stringify(bad))
  const cli = join(ROOT, 'bin', 'fairway.js')
  const check = spawnSync(process.execPath, [cli, 'config', 'check', file], { encoding: 'utf8' })
  t.equal(check.status, 1)
  t.match(check.stderr, /\$\.tenants\.acme\.tier: must be one of/)
  const ok = spawnSync(process.execPath, [cli, 'config', 'check', DEMO_CONFIG_FILE], { encoding: 'utf8' })
  t.equal(ok.status, 0)
  t.match(ok.stdout, /ok \(5 tenants, 3 models/)
  const start = spawnSync(process.execPath, [cli, 'start', '--config', file, '--port', '0'], { encoding: 'utf8', timeout: 20_000 })
  t.equal(start.status, 1, 'server refuses to start')
  t.match(start.stderr, /FW_ERR_CONFIG_INVALID[\s\S]*\$\.tenants\.acme\.tier/)
  // A CPU this machine does not have: refused at start, naming the class.
  const far = demoRaw()
  far.modelRepository = join(ROOT, 'models')
  far.cost = { enabled: false }
  far.serviceClasses.shared.cpus = [1000]
  writeFileSync(join(dir, 'far.json'), JSON.stringify(far))
  const farStart = spawnSync(process.execPath, [cli, 'start', '--config', join(dir, 'far.json'), '--port', '0'], { encoding: 'utf8', timeout: 20_000 })
  t.equal(farStart.status, 1, 'a class on a CPU this process cannot use does not start')
  t.match(farStart.stderr, /FW_ERR_CONFIG_INVALID[\s\S]*\$\.serviceClasses\.shared\.cpus: CPU 1000 is not online/)
  writeFileSync(join(dir, 'broken.json'), '{ not json')
  const broken = spawnSync(process.execPath, [cli, 'config', 'check', join(dir, 'broken.json')], { encoding: 'utf8' })
  t.equal(broken.status, 1)
  t.match(broken.stderr, /not valid JSON/)
})

t.test('fairway keys hash gives the stored form', async (t) => {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'fairway.js'), 'keys', 'hash', 'fw_demo_acme_premium'], { encoding: 'utf8' })
  t.equal(r.stdout.trim(), demoRaw().tenants.acme.apiKeys[0])
})
