import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import RedisMock from 'ioredis-mock'
import { RedisStore } from '../../lib/stores/redis.js'
import { storeConformance } from './conformance.js'
import { REDIS_URL, requireRedis } from '../helpers/redis.js'

/** Whether `client` holds identity f's once-key `id` under `prefix` (aog:{F}:o:<id>, docs/operations.md). */
const onceHeld = (client: Redis, prefix: string) => async (f: string, id: string): Promise<boolean> =>
  await client.exists(`${prefix}{${Buffer.from(f, 'hex').toString('base64url')}}:o:${id}`) === 1

// ioredis-mock: fast, in-process, for the logic of the scripts (its Lua support is partial).
const mock = new RedisMock() as unknown as Redis
const mockPrefix = `mock${randomBytes(4).toString('hex')}:`
storeConformance(t, 'ioredis-mock', async () => new RedisStore({ client: mock, prefix: mockPrefix }), { wallClock: false, onceHeld: onceHeld(mock, mockPrefix) })

// The real Redis on 127.0.0.1:6379 (started before the session on these machines; .ci/run starts
// one where missing). A random prefix keeps runs apart.
await requireRedis()
const prefix = `aogtest:${randomBytes(4).toString('hex')}:`
const look = new Redis(REDIS_URL)
t.teardown(() => { look.disconnect() })
storeConformance(t, 'redis (127.0.0.1:6379)', async () => {
  const s = new RedisStore({ url: REDIS_URL, prefix })
  await s.ready()
  return s
}, { wallClock: true, onceHeld: onceHeld(look, prefix) })
