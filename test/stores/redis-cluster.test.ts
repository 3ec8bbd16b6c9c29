import t from 'tap'
import { randomBytes } from 'node:crypto'
import type { Cluster } from 'ioredis'
import { RedisStore } from '../../lib/stores/redis.js'
import { storeConformance } from './conformance.js'
import { startCluster } from '../helpers/redis.js'

// A real 3-master Redis Cluster started by the harness from redis-server on free loopback ports.
const cluster = await startCluster(3)
t.teardown(() => cluster.stop())

storeConformance(t, 'redis cluster (3 masters)', async () => {
  const s = new RedisStore({ cluster: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), prefix: `aogtest:${randomBytes(4).toString('hex')}:` })
  await s.ready()
  return s
})

t.test('the keys of one identity land in one slot, and identities spread over the masters', async (t) => {
  const s = new RedisStore({ cluster: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), prefix: 'aogspread:' })
  t.teardown(() => s.close())
  await s.ready()
  const rate = { burst: 10, perSecond: 10 }
  for (let i = 0; i < 30; i++) {
    const fingerprint = randomBytes(32).toString('hex')
    await s.issue({ fingerprint, rate, nonce: randomBytes(16).toString('base64url'), seed: randomBytes(32).toString('hex'), iterations: 16, checkpointInterval: 4, deadlineMs: 5000, graceMs: 1000 })
  }
  const counts = await Promise.all(cluster.nodes.map(async (n) => Number((await n.cli('eval', "return #redis.call('keys', 'aogspread:*')", '0')))))
  t.equal(counts.reduce((a, b) => a + b, 0), 60, 'a bucket and a challenge per identity')
  t.ok(counts.filter((c) => c > 0).length >= 2, `keys on several masters: ${counts.join(', ')}`)
})

t.test('ready() and health() wait for the connections to every master, not only the slot map', async (t) => {
  // ioredis's Cluster is 'ready' once it has the slot map, before it has connected to the masters;
  // a command sent then fails (no offline queue), so the store is not ready until they are.
  for (let i = 0; i < 5; i++) {
    let client: Cluster | undefined
    const s = new RedisStore({ cluster: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), prefix: 'aogready:', onClient: (c) => { client = c as Cluster } })
    t.teardown(() => s.close())
    await s.ready()
    const masters = client!.nodes('master')
    t.equal(masters.length, 3)
    t.same(masters.map((n) => n.status), ['ready', 'ready', 'ready'], `round ${i}: every master connected once ready() resolves`)
    t.equal(s.health().state, 'ready')
    await s.ping()
  }
})
