/**
 * Grants on a real Redis (docs/protocol.md section 7): two gates share one grant and one upstream
 * bucket, one script call per protected request, every key with a TTL, and a stalled Redis means
 * 503 with Retry-After and no request reaching the upstream. GET /auth's answers in direct mode.
 */
import t from 'tap'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { startGate } from '../helpers/gate.js'
import { DEV } from '../helpers/pki.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { startRedis } from '../helpers/redis.js'
import { pass } from '../../lib/client/agent.js'
import { sleep } from '../helpers/outcome.js'

const KEY = join(DEV, 'assertion-key.pem')

t.test('two gates on one Redis share one grant budget and one upstream bucket', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const up = await startEchoUpstream(t)
  const common = { store: 'redis' as const, redisUrl: redis.url, upstream: up.url, assertionKey: KEY }
  const a = await startGate(t, { ...common, grantMaxRequests: 6 })
  const b = await startGate(t, { ...common, grantMaxRequests: 6 })
  await pass(a.agent())
  const got: number[] = []
  for (let i = 0; i < 8; i++) got.push((await (i % 2 === 0 ? a : b).raw('agent', '/shared')).status)
  t.same(got, [200, 200, 200, 200, 200, 200, 401, 401], 'the pass on gate A is good on gate B, and the budget is one')

  const c = await startGate(t, { ...common, upstreamRateBurst: 4, upstreamRatePerSecond: 0.01 })
  const d = await startGate(t, { ...common, upstreamRateBurst: 4, upstreamRatePerSecond: 0.01 })
  await pass(c.agent('agent2'))
  const rated: number[] = []
  for (let i = 0; i < 6; i++) rated.push((await (i % 2 === 0 ? c : d).raw('agent2', '/rated')).status)
  t.same(rated, [200, 200, 200, 200, 429, 429], 'one upstream bucket across both gates')
})

t.test('one script call per protected request; every key has a TTL', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url, upstream: up.url, assertionKey: KEY, grantMaxRequests: 100 })
  await pass(g.agent())
  await g.raw('agent', '/warm') // the connection's first use of the script (EVAL once, EVALSHA after)
  t.equal(await redis.cli('config', 'resetstat'), 'OK')
  for (let i = 0; i < 10; i++) t.equal((await g.raw('agent', `/p${i}`)).status, 200)
  t.equal((await g.raw('agent2', '/no-grant')).status, 401)
  await sleep(50)
  const stats = await redis.cli('info', 'commandstats')
  const calls = Object.fromEntries([...stats.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1], Number(m[2])]))
  t.equal((calls.evalsha ?? 0) + (calls.eval ?? 0), 11, `one script per protected request (${JSON.stringify(calls)})`)
  const client = new Redis(redis.url)
  t.teardown(() => client.disconnect())
  const keys = await client.keys('*')
  t.ok(keys.some((k) => k.endsWith(':g')) && keys.some((k) => k.endsWith(':u')), `grant and upstream bucket keys exist: ${keys.join(' ')}`)
  for (const k of keys) t.ok(await client.pttl(k) > 0, `${k} has a TTL`)
})

t.test('Redis stalled: protected requests get 503 with Retry-After and never reach the upstream', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url, redisCommandTimeoutMs: 200, upstream: up.url, assertionKey: KEY })
  await pass(g.agent())
  t.equal((await g.raw('agent', '/before')).status, 200)
  const seen = up.seen.length
  redis.child.kill('SIGSTOP')
  const all = await Promise.all(Array.from({ length: 10 }, async (_, i) => await g.raw('agent', `/stalled${i}`)))
  redis.child.kill('SIGCONT')
  t.same([...new Set(all.map((r) => `${r.status} ${String(r.json.code)} ${r.headers['retry-after'] !== undefined ? 'retry' : ''}`))], ['503 AOG_UNAVAILABLE retry'])
  t.equal(up.seen.length, seen, 'nothing reached the upstream')
})

t.test('GET /auth in direct mode: 204 with X-AOG-Agent, refusals as 401/403 with X-AOG-Code and X-AOG-Status', async (t) => {
  const g = await startGate(t, { assertionKey: KEY, upstreamRateBurst: 2, upstreamRatePerSecond: 0.01 })
  const orig = { 'x-original-method': 'DELETE', 'x-original-uri': '/things/7?force=1' }
  const none = await g.raw('agent', '/auth', { headers: orig })
  t.equal(none.status, 401)
  t.equal(none.headers['x-aog-code'], 'AOG_GRANT_REQUIRED')
  t.equal(none.headers['x-aog-status'], '401')
  t.equal(none.headers['www-authenticate'], 'AOG challenge="/challenge"')
  await pass(g.agent())
  const ok = await g.raw('agent', '/auth', { headers: orig })
  t.equal(ok.status, 204)
  t.match(String(ok.headers['x-aog-agent']), /^[\w-]+\.[\w-]+\.[\w-]+$/)
  const claims = JSON.parse(Buffer.from(String(ok.headers['x-aog-agent']).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
  t.match(claims, { htm: 'DELETE', htu: '/things/7?force=1', aud: 'aog-upstream' })
  const limited = await g.raw('agent', '/auth', { headers: orig })
  t.equal(limited.status, 403, 'a 429 travels as 403')
  t.equal(limited.headers['x-aog-code'], 'AOG_RATE_LIMITED')
  t.equal(limited.headers['x-aog-status'], '429')
  t.ok(Number(limited.headers['retry-after']) >= 1)
  const bad = await g.raw('agent', '/auth')
  t.equal(bad.status, 403)
  t.equal(bad.headers['x-aog-status'], '400', 'no X-Original-*: a bad request, as 403')
  t.equal((await g.raw('agent', '/auth', { method: 'POST', headers: orig })).status, 403, '405 as 403')
  const traefik = await g.raw('agent2', '/auth', { headers: { 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/t' } })
  t.equal(traefik.headers['x-aog-code'], 'AOG_GRANT_REQUIRED', 'Traefik\'s header names are read too')
  const repeated = await g.raw('agent2', '/auth', { headers: ['x-original-method', 'GET', 'x-original-uri', '/a', 'x-original-uri', '/b'] })
  t.equal(repeated.headers['x-aog-status'], '400', 'a repeated X-Original-URI is never trusted')
})

t.test('Envoy\'s ext_authz form: any method under /auth/, the original path after it, 200 when allowed', async (t) => {
  const g = await startGate(t, { assertionKey: KEY })
  const before = await g.raw('agent', '/auth/orders/9?x=1', { method: 'DELETE' })
  t.equal(before.status, 401)
  t.equal(before.headers['x-aog-code'], 'AOG_GRANT_REQUIRED')
  await pass(g.agent())
  const ok = await g.raw('agent', '/auth/orders/9?x=1', { method: 'DELETE' })
  t.equal(ok.status, 200, 'Envoy allows on 200 only')
  const claims = JSON.parse(Buffer.from(String(ok.headers['x-aog-agent']).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
  t.match(claims, { htm: 'DELETE', htu: '/orders/9?x=1' })
  const post = await g.raw('agent', '/auth/upload', { method: 'POST', headers: { 'x-original-method': 'PUT', 'x-original-uri': '/elsewhere' } })
  t.equal(post.status, 200)
  t.match(JSON.parse(Buffer.from(String(post.headers['x-aog-agent']).split('.')[1]!, 'base64url').toString()), { htm: 'PUT', htu: '/elsewhere' }, 'explicit X-Original-* headers win')
})

t.test('without --assertion-key there is no /auth, and --upstream is refused', async (t) => {
  const g = await startGate(t)
  t.equal((await g.raw('agent', '/auth')).status, 404)
  await t.rejects(startGate(t, { upstream: 'http://127.0.0.1:1' }), { name: 'ConfigError', message: /assertionKey: is required with upstream/ })
})
