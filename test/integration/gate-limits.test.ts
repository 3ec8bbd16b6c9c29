/** The gate over real TLS: malformed and oversized input, routes, rate limits, capacity, store failures, shutdown and logs. */
import t from 'tap'
import { request } from 'undici'
import { Readable } from 'node:stream'
import { connect } from 'node:tls'
import { agentFiles } from '../helpers/pki.js'
import { refusedWith, startGate } from '../helpers/gate.js'
import { getChallenge, solve, submitTask, type GateError, type TaskBody } from '../../lib/client/agent.js'
import { solveChain } from '../../lib/chain/chain.js'
import type { MemoryStore } from '../../lib/stores/memory.js'

t.test('malformed, oversized, wrong media type, unknown field and prototype pollution are refused', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  const good = solve(c, agent.fingerprint)
  const post = async (body: string, type = 'application/json'): ReturnType<typeof g.raw> =>
    g.raw('agent', '/task', { method: 'POST', body, headers: { 'content-type': type } })
  const cases: Array<[string, string, string, number, string]> = [
    ['not JSON', '{"nonce":', 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['a JSON array', '[]', 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['a missing field', JSON.stringify({ nonce: good.nonce }), 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['an unknown field', JSON.stringify({ ...good, extra: 1 }), 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['a bad hex field', JSON.stringify({ ...good, result_hash: 'XYZ' }), 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['a negative runtime', JSON.stringify({ ...good, runtime_ms: -1 }), 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['__proto__', `{"__proto__":{"polluted":true},${JSON.stringify(good).slice(1)}`, 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['constructor.prototype', `{"constructor":{"prototype":{"polluted":true}},${JSON.stringify(good).slice(1)}`, 'application/json', 400, 'AOG_BAD_REQUEST'],
    ['text/plain', JSON.stringify(good), 'text/plain', 415, 'AOG_UNSUPPORTED_MEDIA_TYPE'],
    ['a foreign charset', JSON.stringify(good), 'application/json; charset=latin1', 415, 'AOG_UNSUPPORTED_MEDIA_TYPE'],
    ['70 KB', JSON.stringify({ ...good, pad: 'x'.repeat(70 * 1024) }), 'application/json', 413, 'AOG_BODY_TOO_LARGE'],
  ]
  for (const [name, body, type, status, code] of cases) {
    const r = await post(body, type)
    t.equal(r.status, status, name)
    t.equal(r.json.code, code, name)
    t.equal(r.headers['content-type'], 'application/problem+json', name)
    t.equal(r.json.status, status, name)
    t.type(r.json.title, 'string')
    t.type(r.json.detail, 'string')
  }
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted')
  t.equal((await submitTask(agent, good)).status, 'accepted', 'none of them burned the nonce')
})

t.test('a body larger than the limit sent without Content-Length is refused with 413', async (t) => {
  const g = await startGate(t)
  const chunks = Readable.from((function * () { for (let i = 0; i < 80; i++) yield Buffer.alloc(1024, 0x20) })())
  const r = await g.raw('agent', '/task', { method: 'POST', body: chunks, headers: { 'content-type': 'application/json' } })
  t.equal(r.status, 413)
  t.equal(r.json.code, 'AOG_BODY_TOO_LARGE')
})

t.test('unknown routes get 404 and wrong methods 405, as problem+json', async (t) => {
  const g = await startGate(t)
  const a = await g.raw('agent', '/nope')
  t.equal(a.status, 404)
  t.equal(a.json.code, 'AOG_NOT_FOUND')
  const b = await g.raw('agent', '/challenge', { method: 'DELETE' })
  t.equal(b.status, 405)
  t.equal(b.json.code, 'AOG_METHOD_NOT_ALLOWED')
  t.match(b.headers.allow, /GET/)
  const c = await g.raw('agent', '/task')
  t.equal(c.status, 405)
  t.equal(c.headers.allow, 'POST')
})

t.test('an empty bucket answers 429 with Retry-After and RateLimit headers, on both endpoints', async (t) => {
  const g = await startGate(t, { rateBurst: 3, ratePerSecond: 0.5 })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  t.equal((await g.raw('agent', '/challenge')).status, 200)
  t.equal((await g.raw('agent', '/challenge')).status, 200)
  const r = await g.raw('agent', '/challenge')
  t.equal(r.status, 429)
  t.equal(r.json.code, 'AOG_RATE_LIMITED')
  t.ok(Number(r.headers['retry-after']) >= 1, 'Retry-After in whole seconds')
  t.match(r.headers['ratelimit-policy'], /^"identity";q=3;w=6$/)
  t.match(r.headers.ratelimit, /^"identity";r=0;t=\d+$/)
  const e = await refusedWith(submitTask(agent, body))
  t.equal(e.status, 429)
  t.ok(e.retryAfter! >= 1)
  // A malformed body from a limited identity still gets 429 first (check order, step 1 before 2).
  const bad = await g.raw('agent', '/task', { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } })
  t.equal(bad.status, 429)
  // Another identity has its own bucket.
  t.equal((await g.raw('agent2', '/challenge')).status, 200)
})

t.test('POST /task from a limited identity is refused before its body is read, and the connection stays usable', async (t) => {
  const g = await startGate(t, { rateBurst: 1, ratePerSecond: 0.01 })
  t.equal((await g.raw('agent', '/challenge')).status, 200, 'the one token')
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ...agentFiles('agent') })
  t.teardown(() => socket.destroy())
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject) })
  let received = ''
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => { received += d })
  const until = async (what: RegExp, label: string): Promise<void> => {
    const end = Date.now() + 10_000
    while (!what.test(received)) {
      if (Date.now() > end) { t.fail(`no ${label} within 10 s; received: ${JSON.stringify(received)}`); return }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }
  // Headers and the first 10 bytes of a 1,000-byte body, then nothing: the answer must not wait for the rest.
  const body = `{"nonce":"${'A'.repeat(22)}","pad":"${' '.repeat(1000 - 43)}"}`
  t.equal(body.length, 1000)
  socket.write(`POST /task HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 10)}`)
  await until(/\r\n\r\n\{[^}]*\}/, 'answer to the half-sent submission')
  t.match(received, /^HTTP\/1\.1 429 /, '429 with the body still unsent')
  t.match(received, /\r\nretry-after: \d+\r\n/i, 'with Retry-After')
  t.match(received, /"code":"AOG_RATE_LIMITED"/)
  t.notMatch(received, /connection: close/i, 'the connection is kept')
  // The rest of the body is read and dropped by the server; the next request on the same
  // connection is parsed from the right place.
  const first = received.length
  socket.write(body.slice(10))
  socket.write('GET /nowhere HTTP/1.1\r\nhost: localhost\r\n\r\n')
  await until(/HTTP\/1\.1 404 [\s\S]*"code":"AOG_NOT_FOUND"/, 'answer to the next request on the same connection')
  t.match(received.slice(first), /^HTTP\/1\.1 404 /, 'the next request answered after the dropped body, nothing in between')
  const m = await (await request(`${g.opsUrl}/metrics`)).body.text()
  t.match(m, /aog_rate_limited_total\{route="\/task",limit="rate"\} 1\b/, 'counted as a rate-limited submission, the token bucket\'s limit')
})

t.test('a limited identity\'s chunked or oversized submission goes the usual way and gets 429; an unread body closes the connection', async (t) => {
  const g = await startGate(t, { rateBurst: 1, ratePerSecond: 0.01 })
  t.equal((await g.raw('agent', '/challenge')).status, 200, 'the one token')
  const chunked = Readable.from([Buffer.from('{"nonce":'), Buffer.from('"x"}')])
  const a = await g.raw('agent', '/task', { method: 'POST', body: chunked, headers: { 'content-type': 'application/json' } })
  t.equal(a.status, 429, 'chunked, well within the limit: 429 after the body')
  const big = '{"x":"' + ' '.repeat(70_000) + '"}'
  const b = await g.raw('agent', '/task', { method: 'POST', body: big, headers: { 'content-type': 'application/json' } })
  t.equal(b.status, 429, 'a declared length over the limit: 429 (step 1 before step 2)')
  t.equal(b.headers.connection, 'close', 'its body was not read, so the connection is closed (as for a 413)')
})

t.test('a full verification queue answers 503 with Retry-After and does not burn the nonce', async (t) => {
  // One worker, no waiting room: while one whole-chain recomputation runs, others are refused.
  const g = await startGate(t, { workers: 1, maxQueue: 0, iterations: 1 << 20, checkpointInterval: 1 << 10, requireCheckpoints: false })
  const agent = g.agent()
  const bodies: TaskBody[] = []
  for (let i = 0; i < 3; i++) {
    const c = await getChallenge(agent)
    const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint)
    bodies.push(bare)
  }
  const results = await Promise.allSettled(bodies.map((b) => submitTask(agent, b)))
  const refused = results.flatMap((r, i) => r.status === 'rejected' ? [[i, r.reason as GateError] as const] : [])
  t.ok(results.some((r) => r.status === 'fulfilled'), 'one was verified')
  t.ok(refused.length >= 1, 'at least one was refused')
  for (const [, e] of refused) {
    t.equal(e.status, 503)
    t.equal(e.code, 'AOG_OVERLOADED')
    t.ok(e.retryAfter! >= 1)
  }
  for (const [i] of refused) t.equal((await submitTask(agent, bodies[i]!)).status, 'accepted', 'the refused nonce is still good')
})

t.test('a verification that times out after the claim says the nonce is spent (not the retryable 503)', async (t) => {
  // A whole-chain recomputation of 2^22 links takes far longer than a 10 ms task timeout.
  const g = await startGate(t, { workers: 1, taskTimeoutMs: 10, iterations: 1 << 22, checkpointInterval: 1 << 12, requireCheckpoints: false })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint)
  const e = await refusedWith(submitTask(agent, bare))
  t.equal(e.status, 503)
  t.equal(e.code, 'AOG_VERIFICATION_ABORTED')
  t.ok(e.retryAfter! >= 1, 'with Retry-After')
  t.match(e.message, /fetch a new challenge/)
  t.equal((await refusedWith(submitTask(agent, bare))).code, 'AOG_NONCE_CONSUMED', 'the nonce is indeed spent')
})

t.test('the memory store is bounded: a full store answers 503 and keeps every live challenge', async (t) => {
  const g = await startGate(t, { maxChallenges: 3 })
  const agent = g.agent()
  const cs = [await getChallenge(agent), await getChallenge(agent), await getChallenge(agent)]
  const r = await g.raw('agent', '/challenge')
  t.equal(r.status, 503)
  t.equal(r.json.code, 'AOG_OVERLOADED')
  t.ok(Number(r.headers['retry-after']) >= 1)
  for (const c of cs) t.equal((await submitTask(agent, solve(c, agent.fingerprint))).status, 'accepted')
  t.equal((g.gate.store as MemoryStore).size, 3, 'tombstones stay until expiry')
})

t.test('a store that cannot be reached fails closed with 503 and Retry-After', async (t) => {
  const { StoreUnavailableError } = await import('../../lib/errors.js')
  const down = async (): Promise<never> => { throw new StoreUnavailableError('down') }
  const store = { kind: 'broken', issue: down, consume: down, bind: down, take: down, authorize: down, ping: down, close: async () => {} }
  const g = await startGate(t, {}, { store })
  const r = await g.raw('agent', '/challenge')
  t.equal(r.status, 503)
  t.equal(r.json.code, 'AOG_UNAVAILABLE')
  t.equal(r.headers['retry-after'], '1')
  const body = solveChain({ seed: '00'.repeat(32), nonce: 'AAAAAAAAAAAAAAAAAAAAAA', iterations: 4096, checkpoint_interval: 256 }, g.agent().fingerprint)
  const s = await g.raw('agent', '/task', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ nonce: 'AAAAAAAAAAAAAAAAAAAAAA', runtime_ms: 1, client_fingerprint: g.agent().fingerprint, ...body }),
  })
  t.equal(s.status, 503)
  t.equal(s.json.code, 'AOG_UNAVAILABLE')
  const ready = await request(g.opsUrl + '/readyz')
  t.equal(ready.statusCode, 503)
  t.match(await ready.body.json(), { status: 'unready', problems: ['store unreachable'] })
})

t.test('a store that throws at once (not a rejected promise) also fails closed with 503', async (t) => {
  // The memory store answers GET /challenge synchronously, so its errors are thrown, not rejected:
  // a closed store, and a plain bug.
  const { MemoryStore } = await import('../../lib/stores/memory.js')
  const closed = new MemoryStore({ maxChallenges: 10, sweepIntervalMs: 0 })
  await closed.close()
  const buggy = Object.assign(new MemoryStore({ maxChallenges: 10, sweepIntervalMs: 0 }), { issue: () => { throw new TypeError('a bug') } })
  for (const store of [closed, buggy]) {
    const g = await startGate(t, {}, { store })
    const r = await g.raw('agent', '/challenge')
    t.equal(r.status, 503)
    t.equal(r.json.code, 'AOG_UNAVAILABLE')
    t.equal(r.headers['retry-after'], '1')
    t.notMatch(JSON.stringify(r.json), /a bug|closed/, 'the cause stays in the log')
  }
})

t.test('oversized request headers get a problem+json 400, not a crash', async (t) => {
  const g = await startGate(t)
  const r = await g.raw('agent', '/challenge', { headers: { 'x-big': 'a'.repeat(9000) } })
  t.equal(r.status, 400)
  t.equal(r.json.code, 'AOG_BAD_REQUEST')
  t.equal((await g.raw('agent', '/challenge')).status, 200, 'the gate still serves')
})

t.test('graceful close finishes an in-flight verification', async (t) => {
  const g = await startGate(t, { workers: 1, iterations: 1 << 20, checkpointInterval: 1 << 10, requireCheckpoints: false })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint)
  const inflight = submitTask(agent, bare)
  while (g.gate.inflight === 0) await new Promise((resolve) => setTimeout(resolve, 5))
  const closed = g.gate.close()
  t.equal((await inflight).status, 'accepted')
  await closed
  await t.rejects(getChallenge(agent), 'no longer accepting')
})

t.test('logs carry one line per request and never a seed or a certificate', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  await submitTask(agent, solve(c, agent.fingerprint))
  await new Promise((resolve) => setTimeout(resolve, 20))
  const lines = g.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request')
  t.equal(lines.length, 2)
  for (const l of lines) {
    t.match(l, { reqId: /^[0-9a-f]{16}$/, fp: agent.fingerprint.slice(0, 16), status: 200, outcome: 'ok' })
    t.type(l.durationMs, 'number')
  }
  // Identities in turn: each line names its own (the gate keeps the last identity's prefix).
  const other = g.agent('agent2')
  const order = [agent, other, other, agent, other]
  for (const a of order) await getChallenge(a)
  await new Promise((resolve) => setTimeout(resolve, 20))
  const more = g.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request').slice(2)
  t.same(more.map((l) => l.fp), order.map((a) => a.fingerprint.slice(0, 16)), 'each line the fingerprint of its own request')
  t.equal(new Set(more.map((l) => l.reqId)).size, order.length, 'request ids unique')
  const all = g.logs.join('')
  t.notOk(all.includes(c.seed), 'no seed in the logs')
  t.notOk(all.includes('BEGIN CERTIFICATE'), 'no certificate in the logs')
})
