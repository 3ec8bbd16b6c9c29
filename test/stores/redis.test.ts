import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import RedisMock from 'ioredis-mock'
import { RedisStore } from '../../lib/stores/redis.js'
import { storeConformance } from './conformance.js'
import { REDIS_URL, requireRedis } from '../helpers/redis.js'

// ioredis-mock: fast, in-process, for the logic of the scripts (its Lua support is partial).
storeConformance(t, 'ioredis-mock', async () => new RedisStore({ client: new RedisMock() as unknown as Redis, prefix: `mock${randomBytes(4).toString('hex')}:` }), { wallClock: false })

// The real Redis on 127.0.0.1:6379 (started before the session on these machines; .ci/run starts
// one where missing). A random prefix keeps runs apart.
await requireRedis()
storeConformance(t, 'redis (127.0.0.1:6379)', async () => {
  const s = new RedisStore({ url: REDIS_URL, prefix: `aogtest:${randomBytes(4).toString('hex')}:` })
  await s.ready()
  return s
})
