/** The gate over real TLS with real certificates: the checks of docs/protocol.md section 4, in order (input limits, rate, capacity and failures are in gate-limits.test.ts). */
import t from 'tap'
import { pino } from 'pino'
import { request } from 'undici'
import { createHash } from 'node:crypto'
import { anonymousAgent, refusedWith, startGate } from '../helpers/gate.js'
import { getChallenge, pass, solve, submitTask, type GateError, type TaskBody } from '../../lib/client/agent.js'

t.test('an authorized agent passes with the agent library, and the response follows the protocol', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const r = await pass(agent)
  t.equal(r.status, 'accepted')
  t.equal(r.verification, 'sampled')
  t.match(r.nonce, /^[A-Za-z0-9_-]{22}$/)
  t.type(r.elapsed_ms, 'number')
  const c = await g.raw('agent', '/challenge')
  t.equal(c.status, 200)
  t.equal(c.headers['cache-control'], 'no-store')
  t.equal(c.headers['x-content-type-options'], 'nosniff')
  t.equal(c.headers['content-type'], 'application/json')
  t.equal(Number(c.headers['content-length']), Buffer.byteLength(JSON.stringify(c.json)), 'Content-Length is the byte count of the body')
  t.equal(c.headers['ratelimit-policy'], `"identity";q=${g.config.rateBurst};w=1`)
  t.match(c.headers.ratelimit, /^"identity";r=\d+;t=\d+$/)
  t.same(Object.keys(c.json).sort(), ['algorithm', 'checkpoint_interval', 'deadline_ts', 'issued_at', 'iterations', 'nonce', 'seed'])
  t.equal(c.json.deadline_ts - c.json.issued_at, g.config.deadlineMs)
  t.match(c.json.seed, /^[0-9a-f]{64}$/)
})

t.test('an embedding program\'s own pino logger shapes and redacts the request lines', async (t) => {
  const lines: string[] = []
  const host = pino({ messageKey: 'message', formatters: { level: (label) => ({ severity: label.toUpperCase() }) }, redact: ['fp'] }, { write: (s: string) => { lines.push(s) } })
  const g = await startGate(t, {}, { logger: host })
  await pass(g.agent())
  const requests = lines.map((l) => JSON.parse(l)).filter((l) => l.message === 'request')
  t.equal(requests.length, 2, 'GET /challenge and POST /task')
  for (const r of requests) {
    t.equal(r.severity, 'INFO', 'the host\'s level formatter')
    t.equal(r.fp, '[Redacted]', 'the host\'s redaction')
    t.equal(r.level, undefined)
    t.equal(r.msg, undefined)
  }
})

t.test('full mode recomputes every segment and says so', async (t) => {
  const g = await startGate(t, { verify: 'full' })
  const r = await pass(g.agent())
  t.equal(r.verification, 'full')
})

t.test('a submission without checkpoints is refused by default, before its nonce is claimed', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint)
  const e = await refusedWith(submitTask(agent, bare))
  t.equal(e.status, 400)
  t.match(e.message, /checkpoints are required/)
  t.equal((await submitTask(agent, solve(c, agent.fingerprint))).status, 'accepted', 'the nonce was not burnt: the same challenge still passes with checkpoints')
})

t.test('with --require-checkpoints off, a submission without checkpoints is recomputed in full', async (t) => {
  const g = await startGate(t, { requireCheckpoints: false })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint)
  const r = await submitTask(agent, bare)
  t.equal(r.verification, 'full')
})

t.test('a client without a certificate is refused at the handshake', async (t) => {
  const g = await startGate(t)
  const d = anonymousAgent()
  t.teardown(() => d.close())
  await t.rejects(request(g.url + '/challenge', { dispatcher: d }))
})

for (const name of ['rogue', 'expired'] as const) {
  t.test(`a ${name} certificate is refused at the handshake`, async (t) => {
    const g = await startGate(t)
    const a = g.agent(name)
    await t.rejects(getChallenge(a))
    await t.rejects(g.raw(name, '/challenge'))
  })
}

t.test('a body whose fingerprint is not the caller\'s gets 403 and leaves the nonce usable', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  const e = await refusedWith(submitTask(agent, { ...body, client_fingerprint: g.agent('agent2').fingerprint }))
  t.equal(e.status, 403)
  t.equal(e.code, 'AOG_FINGERPRINT_MISMATCH')
  t.equal((await submitTask(agent, body)).status, 'accepted')
})

t.test('another identity\'s nonce is unknown (404) and still passable by its owner', async (t) => {
  const g = await startGate(t)
  const owner = g.agent()
  const thief = g.agent('agent2')
  const c = await getChallenge(owner)
  const ownersBody = solve(c, owner.fingerprint)
  // The thief solves the same challenge for its own identity: the nonce is not its own.
  const e = await refusedWith(submitTask(thief, solve(c, thief.fingerprint)))
  t.equal(e.status, 404)
  t.equal(e.code, 'AOG_UNKNOWN_NONCE')
  t.equal((await submitTask(owner, ownersBody)).status, 'accepted')
})

t.test('a replayed nonce is refused with 409', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  t.equal((await submitTask(agent, body)).status, 'accepted')
  const e = await refusedWith(submitTask(agent, body))
  t.equal(e.status, 409)
  t.equal(e.code, 'AOG_NONCE_CONSUMED')
})

t.test('an unknown nonce is refused with 404', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve({ ...c, nonce: 'AAAAAAAAAAAAAAAAAAAAAA' }, agent.fingerprint)
  const e = await refusedWith(submitTask(agent, body))
  t.equal(e.code, 'AOG_UNKNOWN_NONCE')
})

t.test('200 parallel submissions of one valid solution: exactly one 200, the rest 409', async (t) => {
  const g = await startGate(t, { verify: 'full' })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  const results = await Promise.allSettled(Array.from({ length: 200 }, () => submitTask(agent, body)))
  const ok = results.filter((r) => r.status === 'fulfilled')
  const codes = results.flatMap((r) => r.status === 'rejected' ? [(r.reason as GateError).code] : [])
  t.equal(ok.length, 1, 'one accept')
  t.equal(codes.length, 199)
  t.same([...new Set(codes)], ['AOG_NONCE_CONSUMED'])
})

t.test('a late submission is refused with 410 and burns the nonce', async (t) => {
  let now = Date.now()
  const g = await startGate(t, {}, { now: () => now })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  now += g.config.deadlineMs + 1
  const e = await refusedWith(submitTask(agent, body))
  t.equal(e.status, 410)
  t.equal(e.code, 'AOG_DEADLINE_PASSED')
  t.equal((await refusedWith(submitTask(agent, body))).code, 'AOG_NONCE_CONSUMED')
  now += g.config.graceMs
  t.equal((await refusedWith(submitTask(agent, body))).code, 'AOG_UNKNOWN_NONCE', 'after the grace period the record is gone')
})

t.test('a submission exactly at the deadline is accepted', async (t) => {
  let now = Date.now()
  const g = await startGate(t, {}, { now: () => now })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  now = c.deadline_ts
  t.equal((await submitTask(agent, body)).status, 'accepted')
})

t.test('a wrong result is refused with 422', async (t) => {
  const g = await startGate(t, { requireCheckpoints: false })
  const agent = g.agent()
  const c = await getChallenge(agent)
  const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint)
  const e = await refusedWith(submitTask(agent, { ...bare, result_hash: 'ab'.repeat(32) }))
  t.equal(e.status, 422)
  t.equal(e.code, 'AOG_WRONG_RESULT')
  t.equal((await refusedWith(submitTask(agent, bare))).code, 'AOG_NONCE_CONSUMED', 'the nonce is burned either way')
})

t.test('a trace mismatch is refused with 422', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const cases: Array<[string, (b: TaskBody) => TaskBody]> = [
    ['wrong trace_hash', (b) => ({ ...b, trace_hash: '00'.repeat(32) })],
    ['last checkpoint is not result_hash', (b) => ({ ...b, checkpoints: [...b.checkpoints!.slice(0, -1), 'cd'.repeat(32)] })],
    ['too few checkpoints', (b) => ({ ...b, checkpoints: b.checkpoints!.slice(1), trace_hash: undefined })],
  ]
  for (const [name, mutate] of cases) {
    const c = await getChallenge(agent)
    const e = await refusedWith(submitTask(agent, mutate(solve(c, agent.fingerprint))))
    t.equal(e.status, 422, name)
    t.equal(e.code, 'AOG_TRACE_MISMATCH', name)
  }
})

t.test('an implausible runtime is refused with 422', async (t) => {
  const g = await startGate(t)
  const agent = g.agent()
  const c = await getChallenge(agent)
  const e = await refusedWith(submitTask(agent, { ...solve(c, agent.fingerprint), runtime_ms: 3_600_000 }))
  t.equal(e.status, 422)
  t.equal(e.code, 'AOG_RUNTIME_IMPLAUSIBLE')

  const slow = await startGate(t, { minNsPerIteration: 1e6 }) // 4096 iterations must take >= 4.096 s
  const a2 = slow.agent()
  const c2 = await getChallenge(a2)
  const e2 = await refusedWith(submitTask(a2, solve(c2, a2.fingerprint)))
  t.equal(e2.code, 'AOG_RUNTIME_IMPLAUSIBLE', 'faster than the floor allows')
})

/** Honest checkpoints for the first half, fabricated ones after (self-consistent trace and result). */
function fabricateSecondHalf (body: TaskBody): TaskBody {
  const cps = body.checkpoints!
  const m = cps.length
  const fake = cps.map((c, i) => i < m / 2 ? c : Buffer.from(Buffer.from(c, 'hex').map((x) => x ^ 0x5a)).toString('hex'))
  const trace = solveChainTrace(fake)
  return { ...body, checkpoints: fake, result_hash: fake[m - 1]!, trace_hash: trace }
}

function solveChainTrace (cps: string[]): string {
  return createHash('sha256').update(Buffer.concat(cps.map((c) => Buffer.from(c, 'hex')))).digest('hex')
}

t.test('sampled mode with S = m always catches fabricated checkpoints', async (t) => {
  const g = await startGate(t, { verify: 'sampled', samples: 16 }) // m = 4096 / 256 = 16
  const agent = g.agent()
  for (let i = 0; i < 10; i++) {
    const c = await getChallenge(agent)
    const e = await refusedWith(submitTask(agent, fabricateSecondHalf(solve(c, agent.fingerprint))))
    t.equal(e.code, 'AOG_WRONG_RESULT')
  }
})

t.test('concurrent requests over many connections each get their own answer, booked once', async (t) => {
  const g = await startGate(t)
  // Requests arriving together are handled in the same turns of the event loop: answers and refusals mixed.
  const kinds = Array.from({ length: 60 }, (_, i) => (i % 6 === 4 ? 'missing' : i % 6 === 5 ? 'method' : 'challenge'))
  const results = await Promise.all(kinds.map(async (kind) => {
    if (kind === 'missing') return { kind, ...(await g.raw('agent', '/nope')) }
    if (kind === 'method') return { kind, ...(await g.raw('agent', '/challenge', { method: 'DELETE' })) }
    return { kind, ...(await g.raw('agent', '/challenge')) }
  }))
  const wrong = results.filter((r) => r.status !== ({ challenge: 200, missing: 404, method: 405 } as Record<string, number>)[r.kind])
  t.same(wrong, [], 'every request got the answer of its own kind')
  const nonces = results.filter((r) => r.kind === 'challenge').map((r) => r.json.nonce as string)
  t.equal(new Set(nonces).size, 40, '40 challenges, 40 distinct nonces')
  t.ok(results.filter((r) => r.kind === 'method').every((r) => r.json.code === 'AOG_METHOD_NOT_ALLOWED' && r.headers.allow === 'GET'))
  t.ok(results.filter((r) => r.kind === 'missing').every((r) => r.json.code === 'AOG_NOT_FOUND'))
  const lines = g.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request')
  t.equal(lines.length, 60, 'one request line per request')
  t.equal(new Set(lines.map((l) => l.reqId)).size, 60, 'each with its own request id')
  t.same(lines.map((l) => l.status).sort(), results.map((r) => r.status).sort(), 'the logged statuses are the statuses answered')
  t.ok(lines.every((l) => typeof l.durationMs === 'number' && l.durationMs >= 0))
  const counts = (await g.metrics.requestDuration.get()).values.filter((v) => v.metricName === 'aog_http_request_duration_seconds_count')
  const total = (status: string): number => counts.filter((v) => v.labels.status === status).reduce((s, v) => s + v.value, 0)
  t.same([total('200'), total('404'), total('405')], [40, 10, 10], 'the duration histogram counts each request once')
  t.equal(g.gate.inflight, 0, 'nothing left in flight')
})
