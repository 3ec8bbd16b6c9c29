import t from 'tap'
import { randomBytes } from 'node:crypto'
import { RedisStore } from '../../lib/stores/redis.js'
import { storeConformance } from './conformance.js'
import { startRedis, startSentinel } from '../helpers/redis.js'

// The conformance suite through a real Sentinel: a master, a replica and one Sentinel started by
// the harness on free loopback ports; the store finds the master through the Sentinel.
const master = await startRedis()
const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
// A down-after long enough that no failover starts while the suite runs.
const sentinel = await startSentinel(master.port, 5000)
const port = sentinel.port
t.teardown(async () => { sentinel.stop(); await replica.stop(); await master.stop() })
const end = Date.now() + 15_000
for (;;) {
  const out = await sentinel.cli('sentinel', 'get-master-addr-by-name', 'mymaster')
  if (out.includes(String(master.port))) break
  if (Date.now() > end) throw new Error('the Sentinel did not come up')
  await new Promise((resolve) => setTimeout(resolve, 100))
}

storeConformance(t, 'redis sentinel (master + replica)', async () => {
  const s = new RedisStore({ sentinels: [{ host: '127.0.0.1', port }], sentinelName: 'mymaster', prefix: `aogtest:${randomBytes(4).toString('hex')}:` })
  await s.ready()
  return s
})
