/**
 * A memory store that fails on demand: its next issue() (fail), or every operation, ping included,
 * until up() (down). Failures are StoreOpErrors naming the operation (the 503 and store-error paths).
 * With `health`, it reports its state and replacements like the Redis store does (the probes).
 */
import { MemoryStore } from '../../lib/stores/memory.js'
import { StoreOpError, type Store, type StoreHealth, type StoreOp } from '../../lib/stores/store.js'

const OPS = new Set<string>(['issue', 'consume', 'bind', 'authorize', 'take', 'ping'])

export interface FailingStore {
  store: Store
  /** The next issue() fails. */
  fail: () => void
  /** Every operation fails from now on (the store is unusable). */
  down: () => void
  /** Usable again. */
  up: () => void
  /** Count a client replacement (reported by health() when `health` is set). */
  replaced: () => void
}

export function failingStore (maxChallenges = 1000, opts: { health?: boolean } = {}): FailingStore {
  const inner = new MemoryStore({ maxChallenges })
  let failNext = false
  let downSince: number | undefined
  let replacements = 0
  const health = (): StoreHealth => ({ state: downSince === undefined ? 'ready' : 'down', downSince, replacements })
  const store = new Proxy(inner, {
    get (target, prop) {
      if (prop === 'health') return opts.health === true ? health : undefined
      if (typeof prop === 'string' && OPS.has(prop) && (downSince !== undefined || (prop === 'issue' && failNext))) {
        failNext = false
        return () => { throw new StoreOpError(prop as StoreOp, `store ${prop} failed: down for the test`) }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  }) as Store
  return {
    store,
    fail: () => { failNext = true },
    down: () => { downSince ??= Date.now() },
    up: () => { downSince = undefined; replacements = 0 },
    replaced: () => { replacements++ },
  }
}
