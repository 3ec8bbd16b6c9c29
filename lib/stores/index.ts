/** Build the configured Store. */
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { MemoryStore } from './memory.js'
import { RedisStore } from './redis.js'
import type { Store } from './store.js'
import { parseHostPort } from '../host-port.js'

/**
 * The store named by config.store; connection errors are logged (at most one line a second), a
 * Redis client unusable for config.redisReplaceAfterMs is replaced (logged and counted).
 */
export function createStore (config: Readonly<Config>, logger: Logger, now?: () => number, metrics?: Metrics): Store {
  if (config.store === 'memory') return new MemoryStore({ maxChallenges: config.maxChallenges, now })
  let last = 0
  return new RedisStore({
    url: config.redisUrl,
    cluster: config.redisCluster?.split(',').map(parseHostPort),
    sentinels: config.redisSentinels?.split(',').map(parseHostPort),
    sentinelName: config.redisSentinelName,
    prefix: config.redisPrefix,
    commandTimeoutMs: config.redisCommandTimeoutMs,
    waitReplicas: config.redisWaitReplicas,
    waitTimeoutMs: config.redisWaitTimeoutMs,
    replaceAfterMs: config.redisReplaceAfterMs,
    onReplace: (reason) => {
      metrics?.storeReplacements.inc()
      logger.warn({ reason, replaceAfterMs: config.redisReplaceAfterMs }, 'redis client replaced')
    },
    onError: (err) => {
      // One line per second at most while Redis is down.
      if (Date.now() - last > 1000) { last = Date.now(); logger.warn({ err: err.message }, 'redis connection error') }
    },
  })
}
