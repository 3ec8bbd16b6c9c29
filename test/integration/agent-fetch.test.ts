/**
 * agent.fetch (docs/protocol.md section 7, the agent side): a real gate with --upstream in front of
 * a real echo server, real TLS. The agent passes the gate when it must (one pass for many requests,
 * before expiry, when the budget is spent, once after a 401), returns the upstream's answers and
 * throws the gate's own refusals as GateErrors.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import type { Counter } from 'prom-client'
import { startGate, refusedWith, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles } from '../helpers/pki.js'
import { startEchoUpstream, type EchoUpstream, type Echoed } from '../helpers/upstream.js'
import { createAgent, getChallenge, pass, GateError } from '../../lib/client/agent.js'
import { MemoryStore } from '../../lib/stores/memory.js'
import { sleep } from '../helpers/outcome.js'

const KEY = join(DEV, 'assertion-key.pem')

async function protectedGate (t: Test, overrides: Record<string, unknown> = {}, deps: Parameters<typeof startGate>[2] = {}): Promise<{ g: TestGate, up: EchoUpstream }> {
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { upstream: up.url, assertionKey: KEY, ...overrides }, deps)
  return { g, up }
}

async function count (c: Counter<string>, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await c.get()
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0)
}

/** Passes the gate recorded (each issues or extends a grant). */
const passes = async (g: TestGate): Promise<number> => await count(g.metrics.grantsIssued)
/** Protected requests the gate refused for want of a grant. */
const grantRefusals = async (g: TestGate): Promise<number> => await count(g.metrics.authDecisions, { result: 'refused', code: 'AOG_GRANT_REQUIRED' })

const sha256 = (b: string | Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('before any pass: the first fetch passes by itself and returns the upstream\'s answer; the next ones reuse the grant', async (t) => {
  const { g, up } = await protectedGate(t)
  const agent = g.agent()
  const r = await agent.fetch('/hello?x=1')
  t.equal(r.statusCode, 200)
  t.equal(r.headers['x-upstream'], 'echo')
  t.match(await r.body.json(), { method: 'GET', url: '/hello?x=1' })
  t.equal(await passes(g), 1, 'one pass')
  t.equal(await grantRefusals(g), 1, 'the one request sent while the grant was unknown')
  t.equal(up.seen.length, 1, 'the upstream saw the request once')

  const post = await agent.fetch('/notes', { method: 'POST', body: 'payload', headers: { 'content-type': 'text/plain', 'x-aog-agent': 'forged' } })
  t.equal(post.statusCode, 200)
  const e = await post.body.json() as Echoed
  t.equal(e.method, 'POST')
  t.equal(e.sha256, sha256('payload'), 'the body arrived')
  t.not(e.headers['x-aog-agent'], 'forged', 'the gate set X-AOG-Agent')
  t.equal(await passes(g), 1, 'no second pass while the grant holds')
  t.equal(await grantRefusals(g), 1)
  await t.rejects(agent.fetch('hello'), TypeError, 'a path must start with /')
})

t.test('a grant held by the identity (another process passed) is used as is: no pass', async (t) => {
  const { g } = await protectedGate(t)
  await pass(g.agent())
  const fresh = g.agent()
  t.equal((await fresh.fetch('/x')).statusCode, 200)
  t.equal(await passes(g), 1, 'the fresh agent did not pass')
  t.equal(await grantRefusals(g), 0)
})

t.test('20 concurrent fetches on a fresh agent share exactly one pass', async (t) => {
  const { g, up } = await protectedGate(t)
  const agent = g.agent()
  const rs = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const r = await agent.fetch(`/c${i}`)
    await r.body.dump()
    return r.statusCode
  }))
  t.same(rs, Array(20).fill(200))
  t.equal(await passes(g), 1, 'exactly one pass')
  t.equal(await grantRefusals(g), 1, 'one request probed; the 19 others waited for it')
  t.equal(up.seen.length, 20)
})

t.test('a first request let through to a slow upstream does not hold up the others: they pass (once) and go', async (t) => {
  const { g, up } = await protectedGate(t)
  await pass(g.agent()) // the identity holds a grant: the fresh agent's first request goes through
  up.handler = (req, res) => {
    setTimeout(() => { res.writeHead(200, { 'content-type': 'text/plain' }).end(req.url) }, req.url === '/slow' ? 2500 : 0)
  }
  const t0 = Date.now()
  const done = new Map<string, number>()
  const agent = g.agent()
  const fetchOne = async (path: string): Promise<void> => {
    const r = await agent.fetch(path)
    await r.body.dump()
    done.set(path, Date.now() - t0)
  }
  const slow = fetchOne('/slow')
  await sleep(20)
  await Promise.all(Array.from({ length: 5 }, async (_, i) => await fetchOne(`/fast${i}`)))
  await slow
  t.comment([...done].map(([p, ms]) => `${p} ${ms} ms`).join(', '))
  t.ok(Math.max(...[0, 1, 2, 3, 4].map((i) => done.get(`/fast${i}`)!)) < done.get('/slow')!, 'the others answered before the slow one')
  t.equal(await passes(g), 2, 'the setup\'s pass and one shared by the five')
  t.equal(await grantRefusals(g), 0)
})

t.test('a pass that fails fails every request waiting for it, with its GateError', async (t) => {
  const { g, up } = await protectedGate(t, { rateBurst: 1, ratePerSecond: 0.01 })
  const agent = g.agent()
  const other = g.agent()
  await getChallenge(other) // the identity's only challenge token
  const errs = await Promise.all(Array.from({ length: 5 }, async (_, i) => await refusedWith(agent.fetch(`/p${i}`))))
  t.same(errs.map((e) => e.code), Array(5).fill('AOG_RATE_LIMITED'))
  t.equal(await count(g.metrics.rateLimited), 1, 'one pass tried')
  t.equal(up.seen.length, 0)
})

t.test('a budget: the request after the last one re-passes first, transparently; a budget spent elsewhere costs one 401 and a retry', async (t) => {
  const { g, up } = await protectedGate(t, { grantMaxRequests: 3 })
  const agent = g.agent()
  t.equal((await pass(agent)).grant.requests, 3)
  const got = []
  for (let i = 0; i < 4; i++) got.push((await agent.fetch(`/b${i}`)).statusCode)
  t.same(got, [200, 200, 200, 200])
  t.equal(await passes(g), 2, 'the 4th fetch re-passed')
  t.equal(await grantRefusals(g), 0, 'before sending: the gate never said no')
  t.equal(up.seen.length, 4)

  // The same identity spends the rest of the grant behind the agent's back (two left).
  t.equal((await g.raw('agent', '/elsewhere')).status, 200)
  t.equal((await g.raw('agent', '/elsewhere')).status, 200)
  const r = await agent.fetch('/after', { method: 'PUT', body: Buffer.from('again') })
  t.equal(r.statusCode, 200)
  t.equal((await r.body.json() as Echoed).sha256, sha256('again'), 'the body was sent again after the 401')
  t.equal(await grantRefusals(g), 1, 'one 401')
  t.equal(await passes(g), 3, 'one pass, then the retry')
})

t.test('expiry (fake clock): the agent re-passes shortly before the grant ends, before sending', async (t) => {
  let now = Date.now()
  const clock = (): number => now
  const store = new MemoryStore({ maxChallenges: 1000, now: clock })
  const { g } = await protectedGate(t, { grantTtlSeconds: 60 }, { store, now: clock })
  const agent = createAgent({ url: g.url, ...agentFiles('agent'), now: clock })
  t.teardown(() => agent.close())
  t.equal((await pass(agent)).grant.expires_at, now + 60_000)
  t.equal((await agent.fetch('/x')).statusCode, 200)
  now += 50_000
  t.equal((await agent.fetch('/x')).statusCode, 200)
  t.equal(await passes(g), 1, '10 s left: no pass')
  now += 5_000
  t.equal((await agent.fetch('/x')).statusCode, 200)
  t.equal(await passes(g), 2, '5 s left (< 10% of 60 s, 6 s): re-passed')
  now += 61_000
  t.equal((await agent.fetch('/x')).statusCode, 200)
  t.equal(await passes(g), 3, 'expired: re-passed')
  t.equal(await grantRefusals(g), 0, 'each time before sending')
})

t.test('the upstream\'s own answers are returned, errors and problem+json included', async (t) => {
  const { g, up } = await protectedGate(t)
  const agent = g.agent()
  await pass(agent)
  up.handler = (_req, res) => { res.writeHead(500, { 'content-type': 'text/plain' }).end('boom') }
  const r500 = await agent.fetch('/fail')
  t.equal(r500.statusCode, 500)
  t.equal(await r500.body.text(), 'boom')
  const problem = { type: 'about:blank', title: 'Unauthorized', status: 401, code: 'NOPE' }
  up.handler = (_req, res) => { res.writeHead(401, { 'content-type': 'application/problem+json', 'x-upstream': 'echo' }).end(JSON.stringify(problem)) }
  const r401 = await agent.fetch('/own-401')
  t.equal(r401.statusCode, 401, 'the upstream\'s own 401 (no AOG_ code) is not the gate\'s')
  t.equal(r401.headers['x-upstream'], 'echo')
  t.same(await r401.body.json(), problem)
  const big = JSON.stringify({ code: 'AOG_LOOKALIKE', padding: 'x'.repeat(100_000) })
  up.handler = (_req, res) => { res.writeHead(400, { 'content-type': 'application/problem+json' }).end(big) }
  const r400 = await agent.fetch('/big-problem')
  t.equal(r400.statusCode, 400)
  t.equal(await r400.body.text(), big, 'a problem body too large to be the gate\'s (Content-Length) is handed on whole')
  up.handler = (_req, res) => {
    res.writeHead(400, { 'content-type': 'application/problem+json' })
    res.write(big.slice(0, 50_000))
    setTimeout(() => res.end(big.slice(50_000)), 20)
  }
  const chunked = await agent.fetch('/big-chunked-problem')
  t.equal(chunked.statusCode, 400)
  t.equal(await chunked.body.text(), big, 'and chunked: handed on once it grows too large')
  t.equal(await passes(g), 1, 'no pass for any of them')
})

t.test('an answer cut short by the upstream rejects with the transport error, not a GateError', async (t) => {
  const { g, up } = await protectedGate(t)
  const agent = g.agent()
  await pass(agent)
  up.handler = (req, res) => {
    res.writeHead(503, { 'content-type': 'application/problem+json', 'content-length': '1000' })
    res.write('{"code":"AOG_')
    setTimeout(() => req.socket.destroy(), 20)
  }
  const err = await agent.fetch('/cut').then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof Error && !(err instanceof GateError), String(err))
  up.handler = undefined
  t.equal((await agent.fetch('/after')).statusCode, 200, 'the agent goes on')
})

t.test('429 from the upstream bucket: GateError AOG_RATE_LIMITED with retryAfter, no pass', async (t) => {
  const { g } = await protectedGate(t, { upstreamRateBurst: 1, upstreamRatePerSecond: 0.1 })
  const agent = g.agent()
  await pass(agent)
  t.equal((await agent.fetch('/r')).statusCode, 200)
  const e = await refusedWith(agent.fetch('/r'))
  t.equal(e.status, 429)
  t.equal(e.code, 'AOG_RATE_LIMITED')
  t.ok(e.retryAfter !== undefined && e.retryAfter >= 1, `retryAfter ${String(e.retryAfter)}`)
  t.match(e.problem, { code: 'AOG_RATE_LIMITED', status: 429 }, 'the problem body')
  t.equal(await passes(g), 1)
})

t.test('a revoked identity: GateError AOG_NOT_AUTHORIZED at once, no pass, no retry loop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-deny-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, '')
  const { g, up } = await protectedGate(t, { denyFile: deny }, { watchMs: 50 })
  const agent = g.agent()
  t.equal((await agent.fetch('/x')).statusCode, 200)
  writeFileSync(deny, agent.fingerprint + '\n')
  const end = Date.now() + 5000
  let err: unknown
  while (err === undefined && Date.now() < end) {
    try { await (await agent.fetch('/x')).body.dump(); await sleep(50) } catch (e) { err = e }
  }
  t.ok(err instanceof GateError)
  t.match(err, { status: 403, code: 'AOG_NOT_AUTHORIZED' })
  const seen = up.seen.length
  const issued = await count(g.metrics.challengesIssued)
  t.match(await refusedWith(g.agent().fetch('/y')), { code: 'AOG_NOT_AUTHORIZED' }, 'a fresh agent of the identity too')
  t.equal(await count(g.metrics.challengesIssued), issued, 'no pass attempted')
  t.equal(up.seen.length, seen)
  t.equal(await passes(g), 1)
})

t.test('a stream body: passes before sending when the grant is unknown; a 401 is thrown, not retried', async (t) => {
  const { g } = await protectedGate(t, { grantMaxRequests: 2 })
  const agent = g.agent()
  const r = await agent.fetch('/up', { method: 'POST', body: Readable.from([Buffer.from('a'), Buffer.from('b')]) })
  t.equal(r.statusCode, 200)
  t.equal((await r.body.json() as Echoed).sha256, sha256('ab'))
  t.equal(await grantRefusals(g), 0, 'no probe with a body that cannot be sent twice')
  t.equal(await passes(g), 1)
  t.equal((await g.raw('agent', '/elsewhere')).status, 200, 'the last request of the grant, spent elsewhere')
  const e = await refusedWith(agent.fetch('/up', { method: 'POST', body: Readable.from([Buffer.from('c')]) }))
  t.equal(e.code, 'AOG_GRANT_REQUIRED')
  t.equal(e.status, 401)
  t.equal(await passes(g), 1, 'not retried')
  const again = await agent.fetch('/up', { method: 'POST', body: Readable.from([Buffer.from('d')]) })
  t.equal(again.statusCode, 200, 'the next fetch passes first')
  await again.body.dump()
  t.equal(await passes(g), 2)
})

t.test('a gate without --upstream: 404 AOG_NOT_FOUND is a GateError', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  await pass(agent)
  t.match(await refusedWith(agent.fetch('/nothing')), { status: 404, code: 'AOG_NOT_FOUND' })
})
