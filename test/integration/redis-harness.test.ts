/** The harness's own Redis start: a start that cannot succeed fails fast, retried, and leaves no process behind. */
import t from 'tap'
import { startRedis } from '../helpers/redis.js'

t.test('a redis-server that cannot start is retried on new ports, then named in a clear error within seconds', async (t) => {
  const started = Date.now()
  await t.rejects(startRedis(['--maxmemory-policy', 'nonsense']), /redis on \d+ did not start \(exited 1\).*after 4 attempts/)
  t.ok(Date.now() - started < 8000, 'it fails when the child exits, not after the ping timeout')
})

t.test('a Cluster node gets its own free bus port, not port + 10000', async (t) => {
  const node = await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'], { cluster: true })
  t.teardown(() => node.stop())
  const bus = Number((await node.cli('config', 'get', 'cluster-port')).split('\n')[1])
  t.ok(bus > 0 && bus !== node.port + 10000, `bus port ${bus} for port ${node.port}`)
  t.equal(await node.cli('ping'), 'PONG')
})
