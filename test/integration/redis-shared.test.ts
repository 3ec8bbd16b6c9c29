/** Several gate processes on one Redis (single node and Cluster): shared nonces and one shared bucket. */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { startCluster, REDIS_URL, requireRedis } from '../helpers/redis.js'
import { startServer, waitReady } from '../helpers/spawn.js'
import { DEV, agentFiles } from '../helpers/pki.js'
import { createAgent, getChallenge, solve, submitTask, type AogAgent } from '../../lib/client/agent.js'
import { outcome } from '../helpers/outcome.js'

await requireRedis()
const prefix = (): string => `aogit:${randomBytes(4).toString('hex')}:`
const TLS = ['--tls-cert', join(DEV, 'server.pem'), '--tls-key', join(DEV, 'server-key.pem'), '--client-ca', join(DEV, 'ca.pem')]
const SMALL = ['--iterations', '4096', '--checkpoint-interval', '256', '--min-ns-per-iteration', '0', '--workers', '1']

async function twoProcesses (t: Test, store: string[]): Promise<[AogAgent, AogAgent]> {
  const a = await startServer([...TLS, ...SMALL, '--rate-burst', '1000', '--rate-per-second', '1000', ...store])
  const b = await startServer([...TLS, ...SMALL, '--rate-burst', '1000', '--rate-per-second', '1000', ...store])
  t.teardown(() => { a.child.kill('SIGKILL'); b.child.kill('SIGKILL') })
  t.match(a.lines[0], { store: store.includes('--redis-cluster') ? 'redis-cluster' : 'redis' })
  // A gate starts before its store is connected (it answers 503 until then): traffic waits for /readyz.
  await waitReady(a.opsUrl)
  await waitReady(b.opsUrl)
  const agentA = createAgent({ url: a.url, ...agentFiles('agent'), connections: 64 })
  const agentB = createAgent({ url: b.url, ...agentFiles('agent'), connections: 64 })
  t.teardown(async () => { await agentA.close(); await agentB.close() })
  return [agentA, agentB]
}

async function sharedState (t: Test, store: string[]): Promise<void> {
  const [viaA, viaB] = await twoProcesses(t, store)
  // Issued by one instance, consumed through the other.
  const c = await getChallenge(viaA)
  t.equal((await submitTask(viaB, solve(c, viaA.fingerprint))).status, 'accepted')
  t.equal(await outcome(submitTask(viaA, solve(c, viaA.fingerprint))), '409 AOG_NONCE_CONSUMED')
  // 200 parallel submissions of one valid solution spread over both: exactly one accept.
  const c2 = await getChallenge(viaB)
  const body = solve(c2, viaA.fingerprint)
  const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => await outcome(submitTask(i % 2 === 0 ? viaA : viaB, body))))
  t.equal(results.filter((r) => r === 'accepted').length, 1, 'one accept')
  t.equal(results.filter((r) => r === '409 AOG_NONCE_CONSUMED').length, 199, 'the rest 409')
}

t.test('two gate processes sharing one Redis: shared nonces, exactly one accept of 200', async (t) => {
  await sharedState(t, ['--store', 'redis', '--redis-url', REDIS_URL, '--redis-prefix', prefix()])
})

t.test('two gate processes on a 3-master Redis Cluster: the same', async (t) => {
  const cluster = await startCluster(3)
  t.teardown(() => cluster.stop())
  await sharedState(t, ['--store', 'redis', '--redis-cluster', cluster.seeds, '--redis-prefix', prefix()])
})

t.test('the rate limit holds across two instances: one bucket, not two', async (t) => {
  const p = prefix()
  const a = await startServer([...TLS, ...SMALL, '--store', 'redis', '--redis-url', REDIS_URL, '--redis-prefix', p, '--rate-burst', '10', '--rate-per-second', '0.001'])
  const b = await startServer([...TLS, ...SMALL, '--store', 'redis', '--redis-url', REDIS_URL, '--redis-prefix', p, '--rate-burst', '10', '--rate-per-second', '0.001'])
  t.teardown(() => { a.child.kill('SIGKILL'); b.child.kill('SIGKILL') })
  const agents = [createAgent({ url: a.url, ...agentFiles('agent') }), createAgent({ url: b.url, ...agentFiles('agent') })]
  t.teardown(async () => { await Promise.all(agents.map((x) => x.close())) })
  const results = await Promise.all(Array.from({ length: 40 }, async (_, i) => await outcome(getChallenge(agents[i % 2]!))))
  t.equal(results.filter((r) => r === 'accepted').length, 10, 'the total admitted equals one bucket')
  t.equal(results.filter((r) => r === '429 AOG_RATE_LIMITED retry').length, 30)
})
