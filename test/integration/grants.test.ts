/**
 * After the pass (docs/protocol.md section 7), direct mode: a real gate with --upstream in front of a
 * real echo server. Grants, budgets, expiry, revocation, the assertion, upstream failures, Redis.
 */
import t, { type Test } from 'tap'
import { createHash, randomBytes, X509Certificate } from 'node:crypto'
import { writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { Readable } from 'node:stream'
import { join } from 'node:path'
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose'
import { Agent, request } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles, pem } from '../helpers/pki.js'
import { buildCrl, crlFile } from '../helpers/crl.js'
import { certFacts } from '../../lib/identity/der.js'
import { startEchoUpstream, type Echoed } from '../helpers/upstream.js'
import { liveGrowth } from '../helpers/memory.js'
import { startRedis } from '../helpers/redis.js'
import { pass } from '../../lib/client/agent.js'
import { MemoryStore } from '../../lib/stores/memory.js'
import { sleep } from '../helpers/outcome.js'

const KEY = join(DEV, 'assertion-key.pem')

async function protectedGate (t: Test, overrides: Record<string, unknown> = {}, deps: Parameters<typeof startGate>[2] = {}): Promise<{ g: TestGate, up: Awaited<ReturnType<typeof startEchoUpstream>> }> {
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { upstream: up.url, assertionKey: KEY, ...overrides }, deps)
  return { g, up }
}

async function verifyAssertion (g: TestGate, jws: string): Promise<JWTPayload> {
  const jwks = createRemoteJWKSet(new URL(g.opsUrl + '/.well-known/jwks.json'))
  const { payload, protectedHeader } = await jwtVerify(jws, jwks, { issuer: 'aog', audience: new URL(g.config.upstream!).origin })
  if (protectedHeader.kid === undefined) throw new Error('no kid')
  return payload
}

const F_B64 = (hex: string): string => Buffer.from(hex, 'hex').toString('base64url')

t.test('before a pass: 401 AOG_GRANT_REQUIRED that says how to get in, and the upstream sees nothing', async (t) => {
  const { g, up } = await protectedGate(t)
  const r = await g.raw('agent', '/hello')
  t.equal(r.status, 401)
  t.equal(r.headers['content-type'], 'application/problem+json')
  t.match(r.json, { code: 'AOG_GRANT_REQUIRED', status: 401 })
  t.equal(r.headers['www-authenticate'], 'AOG challenge="/challenge"')
  t.equal(r.headers.link, '</challenge>; rel="https://aog.dev/rel/challenge"')
  t.equal(up.seen.length, 0)
  t.equal((await g.raw('agent', '/.well-known/aog/anything')).status, 404, 'the gate\'s reserved paths are never proxied')
})

t.test('after a pass: the request reaches the upstream with a valid X-AOG-Agent; client X-AOG-* never arrive', async (t) => {
  const { g } = await protectedGate(t)
  const agent = g.agent()
  const passed = await pass(agent)
  t.match(passed.grant, { requests: null })
  t.ok(passed.grant.expires_at > Date.now() + 290_000, 'grant for the default 300 s')
  const r = await g.raw('agent', '/hello/world?x=1&y=%20', { method: 'POST', body: 'payload', headers: { 'x-aog-agent': 'forged', 'X-AOG-Client-Cert': 'forged', 'x-aog-foo': 'bar', 'content-type': 'text/plain' } })
  t.equal(r.status, 200)
  t.equal(r.headers['x-upstream'], 'echo', 'the upstream\'s own headers pass through')
  const e = r.json as Echoed
  t.equal(e.method, 'POST')
  t.equal(e.url, '/hello/world?x=1&y=%20')
  t.equal(e.sha256, createHash('sha256').update('payload').digest('hex'), 'the body arrived')
  t.equal(e.headers['x-aog-foo'], undefined)
  t.equal(e.headers['x-aog-client-cert'], undefined)
  t.equal(e.headers['x-forwarded-proto'], 'https')
  t.equal(e.headers['x-forwarded-for'], '127.0.0.1')
  const claims = await verifyAssertion(g, String(e.headers['x-aog-agent']))
  t.match(claims, { iss: 'aog', sub: agent.fingerprint, htm: 'POST', htu: '/hello/world?x=1&y=%20', cnf: { 'x5t#S256': F_B64(agent.fingerprint) }, grant_exp: passed.grant.expires_at })
  t.ok(claims.exp! - claims.iat! <= 60 && claims.exp! > claims.iat!, 'exp at most 60 s after iat')
})

t.test('1000 protected requests: 1000 distinct jti, all verified', async (t) => {
  const { g, up } = await protectedGate(t, { upstreamRateBurst: 5000 })
  await pass(g.agent())
  const statuses = new Map<number, number>()
  for (let batch = 0; batch < 50; batch++) {
    await Promise.all(Array.from({ length: 20 }, async () => {
      const r = await g.raw('agent', '/n')
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
    }))
  }
  t.same([...statuses], [[200, 1000]])
  const jtis = new Set<string>()
  for (const e of up.seen) jtis.add(String((await verifyAssertion(g, String(e.headers['x-aog-agent']))).jti))
  t.equal(jtis.size, 1000)
})

t.test('a budget: exactly N requests, the N+1th refused; a new pass refills it (memory and Redis)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  for (const store of [{}, { store: 'redis', redisUrl: redis.url }]) {
    const { g, up } = await protectedGate(t, { grantMaxRequests: 5, ...store })
    const agent = g.agent()
    t.equal((await pass(agent)).grant.requests, 5)
    const got = []
    for (let i = 0; i < 6; i++) got.push((await g.raw('agent', `/b${i}`)).status)
    t.same(got, [200, 200, 200, 200, 200, 401], `${g.gate.store.kind}: five then 401`)
    t.equal(up.seen.length, 5)
    await pass(agent)
    t.equal((await g.raw('agent', '/again')).status, 200, `${g.gate.store.kind}: refilled`)
  }
})

t.test('a grant expires (fake clock); another identity never shares it', async (t) => {
  let now = Date.now()
  const clock = (): number => now
  const store = new MemoryStore({ maxChallenges: 1000, now: clock })
  const { g } = await protectedGate(t, { grantTtlSeconds: 60 }, { store, now: clock })
  await pass(g.agent())
  t.equal((await g.raw('agent', '/x')).status, 200)
  t.equal((await g.raw('agent2', '/x')).status, 401, 'agent2 has no grant')
  now += 59_000
  t.equal((await g.raw('agent', '/x')).status, 200, 'still live a second before expiry')
  now += 1_001
  const r = await g.raw('agent', '/x')
  t.equal(r.status, 401)
  t.equal(r.json.code, 'AOG_GRANT_REQUIRED')
})

t.test('revocation refuses the next protected request of a live grant on a kept-alive connection', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-deny-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, '')
  const { g } = await protectedGate(t, { denyFile: deny }, { watchMs: 50 })
  const agent = g.agent()
  await pass(agent)
  t.equal((await g.raw('agent', '/x')).status, 200)
  writeFileSync(deny, agent.fingerprint + '\n')
  const end = Date.now() + 5000
  let r = await g.raw('agent', '/x')
  while (r.status === 200 && Date.now() < end) { await sleep(50); r = await g.raw('agent', '/x') }
  t.equal(r.status, 403)
  t.equal(r.json.code, 'AOG_NOT_AUTHORIZED')
})

t.test('a CRL revoking a certificate with a live grant refuses its next protected request on the same connection', async (t) => {
  const crl = crlFile(buildCrl({ revoked: [] }))
  const { g, up } = await protectedGate(t, { crl }, { watchMs: 50 })
  await pass(g.agent('agent2'))
  t.equal((await g.raw('agent2', '/x')).status, 200)
  let allowed = 1
  const serial = Buffer.from(certFacts(new X509Certificate(pem('agent2.pem')).raw).serial, 'hex')
  writeFileSync(crl, buildCrl({ revoked: [{ serial }] }))
  const end = Date.now() + 5000
  let r = await g.raw('agent2', '/x')
  while (r.status === 200 && Date.now() < end) { allowed++; await sleep(50); r = await g.raw('agent2', '/x') }
  t.equal(r.status, 403)
  t.equal(r.json.code, 'AOG_NOT_AUTHORIZED')
  t.equal((await g.raw('agent2', '/x')).status, 403, 'and every request after it')
  t.equal(up.seen.length, allowed, 'only the allowed requests reached the upstream')
})

t.test('the upstream bucket: 429 with Retry-After, separate from the challenge bucket', async (t) => {
  const { g } = await protectedGate(t, { upstreamRateBurst: 3, upstreamRatePerSecond: 0.1 })
  await pass(g.agent())
  const got = []
  for (let i = 0; i < 5; i++) got.push(await g.raw('agent', '/r'))
  t.same(got.map((r) => r.status), [200, 200, 200, 429, 429])
  t.equal(got[3]!.json.code, 'AOG_RATE_LIMITED')
  t.ok(Number(got[3]!.headers['retry-after']) >= 1)
  await pass(g.agent()) // the challenge bucket is not the upstream's
})

t.test('upstream down → 502, slow → 504, body too large → 413: all problem+json, no accept leaks', async (t) => {
  const { g, up } = await protectedGate(t, { upstreamTimeoutMs: 300, upstreamMaxBodyBytes: 1024 })
  await pass(g.agent())
  const big = await g.raw('agent', '/big', { method: 'PUT', body: Buffer.alloc(4096) })
  t.equal(big.status, 413)
  t.equal(big.json.code, 'AOG_BODY_TOO_LARGE')
  up.handler = () => { /* never answers */ }
  const slow = await g.raw('agent', '/slow')
  t.equal(slow.status, 504)
  t.equal(slow.json.code, 'AOG_UPSTREAM_TIMEOUT')
  up.server.closeAllConnections()
  await new Promise<void>((resolve) => up.server.close(() => resolve()))
  const down = await g.raw('agent', '/down')
  t.equal(down.status, 502)
  t.equal(down.json.code, 'AOG_UPSTREAM_UNAVAILABLE')
  t.equal(down.headers['content-type'], 'application/problem+json')
  const metrics = await (await request(g.opsUrl + '/metrics')).body.text()
  t.comment(metrics.split('\n').filter((l) => /aog_(upstream_requests|auth_decisions)_total\{/.test(l)).join('\n'))
  t.match(metrics, /aog_upstream_requests_total\{status_class="error"\} 2/, 'the 504 and the 502: the upstream did not answer')
  // A Content-Length over the limit is refused before the store call: the grant is not spent.
  t.match(metrics, /aog_auth_decisions_total\{result="refused",code="AOG_BODY_TOO_LARGE"\} 1/, 'the 413 is a refusal')
  t.notMatch(metrics, /aog_auth_decisions_total\{result="refused",code="AOG_UPSTREAM/, 'an upstream failure is not a refusal')
  t.match(metrics, /aog_auth_decisions_total\{result="allowed",code="ok"\} 2/)
})

t.test('a 50 MiB upload and a 50 MiB download stream through intact, memory flat', async (t) => {
  const { g, up } = await protectedGate(t)
  await pass(g.agent())
  const chunk = randomBytes(1 << 20)
  const total = 50
  const want = createHash('sha256')
  for (let i = 0; i < total; i++) want.update(chunk)
  const digest = want.digest('hex')
  // A body held whole anywhere (gate, upstream or client: one process) would be 50 MiB live at once.
  const { base, peak } = await liveGrowth(async () => {
    async function * body (): AsyncGenerator<Buffer> { for (let i = 0; i < total; i++) yield chunk }
    const r = await g.raw('agent', '/upload', { method: 'POST', body: Readable.from(body()) })
    t.equal(r.status, 200)
    t.equal((r.json as Echoed).sha256, digest, 'the upload arrived intact')
    t.equal((r.json as Echoed).bytes, total << 20)
    up.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      let i = 0
      const more = (): void => {
        while (i < total) {
          i++
          if (!res.write(chunk)) { res.once('drain', more); return }
        }
        res.end()
      }
      more()
    }
    const h = createHash('sha256')
    let bytes = 0
    // A streaming request (raw() would buffer the body).
    const dispatcher = new Agent({ connect: agentFiles('agent') })
    t.teardown(() => dispatcher.close())
    const s = await request(g.url + '/download', { dispatcher })
    for await (const c of s.body) { h.update(c as Buffer); bytes += (c as Buffer).length }
    t.equal(bytes, total << 20)
    t.equal(h.digest('hex'), digest, 'the download arrived intact')
  })
  const growth = (peak - base) / 1048576
  t.comment(`live memory growth ${growth.toFixed(1)} MiB at most for ${total} MiB each way (gate, upstream and client in one process)`)
  t.ok(growth < total / 2, `memory stays flat: ${growth.toFixed(1)} MiB < ${total / 2} MiB (half a body): none held whole`)
})
