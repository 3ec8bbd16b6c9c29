/**
 * lib/bounded-fetch.ts's failure labels: undici's own timers (connect, headers, body), which run out
 * at the same moment as the fetch's abort signal, are a timeout like the signal's, not a network
 * failure (a race the directory's metric lost now and then); any other error is network.
 */
import t from 'tap'
import { Dispatcher } from 'undici'
import { fetchJson, FetchError } from '../../lib/bounded-fetch.js'

/** A dispatcher whose every request fails with `err` (what undici's client reports when its timer fires). */
class Failing extends Dispatcher {
  constructor (readonly failure: Error) { super() }
  override dispatch (_opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    queueMicrotask(() => handler.onError?.(this.failure))
    return true
  }
}

t.test('undici\'s timeouts are labelled timeout; other errors network', async (t) => {
  const cases: Array<[string | undefined, string]> = [
    ['UND_ERR_CONNECT_TIMEOUT', 'timeout'],
    ['UND_ERR_HEADERS_TIMEOUT', 'timeout'],
    ['UND_ERR_BODY_TIMEOUT', 'timeout'],
    ['ECONNRESET', 'network'],
    [undefined, 'network'],
  ]
  for (const [code, outcome] of cases) {
    const err = Object.assign(new Error(`failed with ${String(code)}`), code === undefined ? {} : { code })
    const failed = await fetchJson('https://directory.example/', { dispatcher: new Failing(err), timeoutMs: 60_000, maxBytes: 1024, accept: 'application/json' }).catch((e: unknown) => e)
    t.ok(failed instanceof FetchError, String(code))
    t.equal((failed as FetchError).outcome, outcome, `${String(code)}: ${outcome}`)
  }
})
