/** Replication: WAIT after the claim, and a Sentinel failover with no double accept. */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startGate } from '../helpers/gate.js'
import { startRedis, startSentinel, type RedisProcess } from '../helpers/redis.js'
import { DEV, pem } from '../helpers/pki.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { createAgent, getChallenge, pass, solve, submitTask } from '../../lib/client/agent.js'
import { RedisStore } from '../../lib/stores/redis.js'
import { AuthorizeStatus, ConsumeStatus, IssueStatus, StoreOpError, TakeStatus, type OnceKey } from '../../lib/stores/store.js'
import { outcome, sleep } from '../helpers/outcome.js'

/** A master and a replica that follows it. */
async function replicated (t: Test): Promise<{ master: RedisProcess, replica: RedisProcess }> {
  const master = await startRedis()
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
  t.teardown(async () => { await replica.stop(); await master.stop() })
  const end = Date.now() + 10_000
  while (!(await master.cli('info', 'replication')).includes('connected_slaves:1') && Date.now() < end) await sleep(50)
  while (!(await replica.cli('info', 'replication')).includes('master_link_status:up') && Date.now() < end) await sleep(50)
  return { master, replica }
}

t.test('--redis-wait-replicas 1: accepted while the replica follows, 503 and nothing accepted while it is stopped', async (t) => {
  const { master, replica } = await replicated(t)
  const g = await startGate(t, { store: 'redis', redisUrl: master.url, redisWaitReplicas: 1, redisWaitTimeoutMs: 300 })
  const agent = g.agent()
  t.equal(await outcome(pass(agent)), 'accepted', 'the replica acknowledged the claim')

  replica.child.kill('SIGSTOP')
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  t.equal(await outcome(submitTask(agent, body)), '503 AOG_UNAVAILABLE retry', 'unacknowledged claim: 503')
  t.equal(await outcome(submitTask(agent, body)), '409 AOG_NONCE_CONSUMED', 'and the nonce is burned, never accepted')
  replica.child.kill('SIGCONT')
  await sleep(200)
  t.equal(await outcome(pass(agent)), 'accepted', 'accepted again once the replica follows')
})

t.test('--redis-wait-replicas 1: every store call that claimed a once-key waits for the replica; one that claimed none does not', async (t) => {
  const { master, replica } = await replicated(t)
  // While the replica follows, a patient WAIT (a loaded machine may take longer than 200 ms to
  // acknowledge); once it is stopped, a short one, since every call then waits the whole timeout.
  const [patient, quick] = [5000, 200].map((ms) => new RedisStore({ url: master.url, prefix: 'aogwait:', waitReplicas: 1, waitTimeoutMs: ms, commandTimeoutMs: ms + 5000 }))
  t.teardown(async () => { await patient!.close(); await quick!.close() })
  await patient!.ready()
  await quick!.ready()
  let store = patient!
  const f = randomBytes(32).toString('hex')
  const rate = { burst: 1000, perSecond: 1000 }
  const key = (): OnceKey => ({ id: randomBytes(16).toString('hex'), ttlMs: 60_000 })
  const issue = (once?: OnceKey): ReturnType<RedisStore['issue']> => store.issue({ fingerprint: f, rate, nonce: randomBytes(16).toString('base64url'), seed: randomBytes(32).toString('hex'), iterations: 16, checkpointInterval: 4, deadlineMs: 10_000, graceMs: 1000, ...(once === undefined ? {} : { once }) })
  const unknown = randomBytes(16).toString('base64url')
  /** Each call that claims a once-key (consume with an unknown nonce claims only the key): its status, then a replay's. */
  const calls: Array<[string, (once: OnceKey) => Promise<{ status: number }>, number, number]> = [
    ['issue', async (once) => await issue(once), IssueStatus.OK, IssueStatus.REPLAYED],
    ['consume', async (once) => await store.consume({ fingerprint: f, nonce: unknown, rate, once }), ConsumeStatus.UNKNOWN, ConsumeStatus.REPLAYED],
    ['take', async (once) => await store.take({ fingerprint: f, rate, once }), TakeStatus.OK, TakeStatus.REPLAYED],
    ['authorize', async (once) => await store.authorize({ fingerprint: f, rate, once }), AuthorizeStatus.NO_GRANT, AuthorizeStatus.REPLAYED],
  ]
  for (const [op, call, status] of calls) t.equal((await call(key())).status, status, `${op}: acknowledged while the replica follows`)

  store = quick!
  replica.child.kill('SIGSTOP')
  for (const [op, call, , replayed] of calls) {
    const once = key()
    const err = await call(once).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof StoreOpError && err.op === op && /acknowledged by 0 of 1/.test(err.message), `${op}: the unacknowledged claim fails (${String(err)})`)
    t.equal((await call(once)).status, replayed, `${op}: its key is spent all the same (a replay claims nothing: answered)`)
  }
  // Calls that claim no once-key send no WAIT (consume, which may claim its nonce, always does).
  const waits = async (): Promise<number> => Number(/cmdstat_wait:calls=(\d+)/.exec(await master.cli('info', 'commandstats'))?.[1] ?? 0)
  const before = await waits()
  t.equal((await issue()).status, IssueStatus.OK)
  t.equal((await store.take({ fingerprint: f, rate })).status, TakeStatus.OK)
  t.equal((await store.authorize({ fingerprint: f, rate })).status, AuthorizeStatus.NO_GRANT)
  t.equal(await waits(), before, 'issue, take and authorize without a once-key: no WAIT')
  t.equal((await store.consume({ fingerprint: f, nonce: unknown, rate })).status, ConsumeStatus.UNKNOWN, 'consume claiming nothing: waits, and answers')
  t.equal(await waits(), before + 1)
  // A 429 records no once-key: there is no claim to acknowledge, so it is answered, and the key is not spent.
  const tight = { burst: 1, perSecond: 0.001 }
  const g = randomBytes(32).toString('hex')
  t.equal((await store.take({ fingerprint: g, rate: tight })).status, TakeStatus.OK)
  const limited = key()
  t.equal((await store.take({ fingerprint: g, rate: tight, once: limited })).status, TakeStatus.RATE_LIMITED, 'a 429 with a once-key recorded none: answered, not failed')
  t.equal((await store.take({ fingerprint: g, rate: tight, once: limited })).status, TakeStatus.RATE_LIMITED, 'its key is not spent: 429 again, not a replay')
})

t.test('--redis-wait-replicas 1, Web Bot Auth: signed requests whose nonce was not acknowledged get 503 and nothing is accepted', async (t) => {
  const { master, replica } = await replicated(t)
  const up = await startEchoUpstream(t)
  const wba = { webBotAuth: true, signatureAgents: join(DEV, 'signature-agents'), upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') }
  const g = await startGate(t, { store: 'redis', redisUrl: master.url, redisWaitReplicas: 1, redisWaitTimeoutMs: 1000, redisCommandTimeoutMs: 3000, ...wba })
  const agent = createAgent({ url: g.url, ca: pem('ca.pem'), signing: { key: readFileSync(join(DEV, 'signing-key.pem')), directoryUrl: 'https://agent.aog.dev' } })
  t.teardown(() => agent.close())
  t.equal(await outcome(pass(agent)), 'accepted', 'the replica acknowledged every nonce')
  t.equal(await outcome(agent.fetch('/before')), 'accepted')
  const c = await getChallenge(agent)

  replica.child.kill('SIGSTOP')
  t.equal(await outcome(getChallenge(agent)), '503 AOG_UNAVAILABLE retry', 'GET /challenge (issue)')
  t.equal(await outcome(agent.fetch('/during')), '503 AOG_UNAVAILABLE retry', 'a protected request (authorize)')
  t.equal(await outcome(submitTask(agent, { ...solve(c, agent.fingerprint), client_fingerprint: 'ab'.repeat(32) })), '503 AOG_UNAVAILABLE retry', 'POST /task refused before the claim (take)')
  t.same(up.seen.map((e) => e.url), ['/before'], 'nothing reached the upstream')

  replica.child.kill('SIGCONT')
  await sleep(200)
  t.equal(await outcome(submitTask(agent, solve(c, agent.fingerprint))), 'accepted', 'served again once the replica follows')
  t.equal(await outcome(agent.fetch('/after')), 'accepted')
})

t.test('Sentinel: a failover mid-run keeps the gate serving with no double accept', async (t) => {
  const master = await startRedis()
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
  const sentinel = await startSentinel(master.port)
  t.teardown(async () => { sentinel.stop(); await replica.stop(); await master.stop() })
  const cli = sentinel.cli
  const sport = sentinel.port
  let end = Date.now() + 15_000
  while (!(await replica.cli('info', 'replication')).includes('master_link_status:up') && Date.now() < end) await sleep(50)
  while (!(await cli('sentinel', 'replicas', 'mymaster')).includes(String(replica.port)) && Date.now() < end) await sleep(100)

  // WAIT 1 as well: without it, claims written to the old master after the promotion are lost when
  // it resyncs as a replica, and such a nonce could be accepted a second time (docs/operations.md).
  const g = await startGate(t, { store: 'redis', redisSentinels: `127.0.0.1:${sport}`, redisSentinelName: 'mymaster', redisWaitReplicas: 1, redisWaitTimeoutMs: 200 })
  const agent = g.agent()
  t.equal(await outcome(pass(agent)), 'accepted', 'serving through the Sentinel')

  // Each round: one challenge, its solution submitted twice at once; never two accepts.
  const counts = { accepted: 0, other: 0 }
  const acceptedBodies: Array<ReturnType<typeof solve>> = []
  let failedOver = false
  end = Date.now() + 30_000
  let round = 0
  while (Date.now() < end) {
    round++
    if (round === 3) t.equal(await cli('sentinel', 'failover', 'mymaster'), 'OK', 'failover started')
    let body
    try { body = solve(await getChallenge(agent), agent.fingerprint) } catch { counts.other++; await sleep(100); continue }
    const rs = await Promise.all([outcome(submitTask(agent, body)), outcome(submitTask(agent, body))])
    const accepts = rs.filter((r) => r === 'accepted').length
    t.ok(accepts <= 1, `round ${round}: ${rs.join(' / ')}`)
    if (accepts === 1) acceptedBodies.push(body)
    counts.accepted += accepts
    const now = (await cli('sentinel', 'get-master-addr-by-name', 'mymaster')).split('\n')[1]
    if (now === String(replica.port)) failedOver = true
    if (failedOver && round > 10 && accepts === 1) break
    await sleep(50)
  }
  t.ok(failedOver, 'the replica was promoted')
  // Every solution accepted before, during or after the failover stays used on the new master.
  const again = await Promise.all(acceptedBodies.map(async (b) => await outcome(submitTask(agent, b))))
  t.equal(again.filter((r) => r === 'accepted').length, 0, `no second accept after the failover (${again.length} resubmitted)`)
  let served = 'not yet'
  for (let i = 0; i < 50 && served !== 'accepted'; i++) {
    served = await outcome(pass(agent))
    if (served !== 'accepted') await sleep(200)
  }
  t.equal(served, 'accepted', 'serving on the new master')
  t.comment(`rounds ${round}, accepts ${counts.accepted}, refused challenge fetches ${counts.other}`)
})
