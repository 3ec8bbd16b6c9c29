/** Replication: WAIT after the claim, and a Sentinel failover with no double accept. */
import t from 'tap'
import { startGate } from '../helpers/gate.js'
import { startRedis, startSentinel } from '../helpers/redis.js'
import { getChallenge, pass, solve, submitTask } from '../../lib/client/agent.js'
import { outcome, sleep } from '../helpers/outcome.js'

t.test('--redis-wait-replicas 1: accepted while the replica follows, 503 and nothing accepted while it is stopped', async (t) => {
  const master = await startRedis()
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
  t.teardown(async () => { await replica.stop(); await master.stop() })
  const end = Date.now() + 10_000
  while (!(await master.cli('info', 'replication')).includes('connected_slaves:1') && Date.now() < end) await sleep(50)
  while (!(await replica.cli('info', 'replication')).includes('master_link_status:up') && Date.now() < end) await sleep(50)
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
