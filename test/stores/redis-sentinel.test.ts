import t from 'tap'
import { randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { RedisStore } from '../../lib/stores/redis.js'
import { storeConformance } from './conformance.js'
import { freePort, startRedis } from '../helpers/redis.js'

// The conformance suite through a real Sentinel: a master, a replica and one Sentinel started by
// the harness on free loopback ports; the store finds the master through the Sentinel.
const exec = promisify(execFile)
const master = await startRedis()
const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
const port = await freePort()
const dir = mkdtempSync(join(tmpdir(), 'aog-sentinel-'))
writeFileSync(join(dir, 'sentinel.conf'), [
  `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
  `sentinel monitor mymaster 127.0.0.1 ${master.port} 1`,
  'sentinel down-after-milliseconds mymaster 5000',
].join('\n') + '\n')
const sentinel = spawn('redis-server', [join(dir, 'sentinel.conf'), '--sentinel'], { stdio: 'ignore' })
t.teardown(async () => { sentinel.kill('SIGKILL'); await replica.stop(); await master.stop() })
const end = Date.now() + 15_000
for (;;) {
  const out = await exec('redis-cli', ['-p', String(port), 'sentinel', 'get-master-addr-by-name', 'mymaster']).then((r) => r.stdout, () => '')
  if (out.includes(String(master.port))) break
  if (Date.now() > end) throw new Error('the Sentinel did not come up')
  await new Promise((resolve) => setTimeout(resolve, 100))
}

storeConformance(t, 'redis sentinel (master + replica)', async () => {
  const s = new RedisStore({ sentinels: [{ host: '127.0.0.1', port }], sentinelName: 'mymaster', prefix: `aogtest:${randomBytes(4).toString('hex')}:` })
  await s.ready()
  return s
})
