/** A memory store that fails its next issue() on demand (StoreUnavailableError): the 503 and store-error paths. */
import { MemoryStore } from '../../lib/stores/memory.js'
import { StoreUnavailableError } from '../../lib/errors.js'
import type { Store } from '../../lib/stores/store.js'

export function failingStore (maxChallenges = 1000): { store: Store, fail: () => void } {
  const inner = new MemoryStore({ maxChallenges })
  let failNext = false
  const store = new Proxy(inner, {
    get (target, prop) {
      if (prop === 'issue' && failNext) {
        failNext = false
        return () => { throw new StoreUnavailableError('down for the test') }
      }
      const v = Reflect.get(target, prop) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  }) as Store
  return { store, fail: () => { failNext = true } }
}
