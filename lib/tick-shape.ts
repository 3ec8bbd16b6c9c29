/**
 * Keeps one entry of Node's nextTick queue alive for the life of the process, so that the hidden
 * classes (V8 maps) of those entries are never collected.
 *
 * Why: `process.nextTick` builds each queue entry with an object literal whose first keys are
 * computed (`{ [async_id_symbol]: ..., [trigger_async_id_symbol]: ..., callback, args }`). V8 11
 * (Node 20) caches such a key's map transition in the literal's feedback, holding the map weakly.
 * When the process idles with no tick pending, a full GC (the memory reducer's, some seconds into
 * the idleness) collects those maps; the next entry then gets a new map, the feedback no longer
 * matches, and V8 turns the site megamorphic for good: from then on every nextTick defines its
 * two symbol keys in the runtime (map lookups and transitions in C++). Several ticks run per
 * request (the request stream's end, the socket's close), so a gate that idled after start
 * (readiness probes, then traffic) spent 5-7% of its CPU per GET /challenge there (`perf`, see
 * docs/benchmarks.md). One entry kept alive keeps its map and the maps before it in the
 * transition chain alive, and the feedback stays monomorphic.
 *
 * The entry is found as the execution resource of a nextTick callback (Node sets it to the queue
 * entry). Where that is not so (another Node), nothing is kept and nothing else changes.
 */
import { executionAsyncResource } from 'node:async_hooks'

let kept: object | undefined

/** Keep the next nextTick entry (resolves true when one was kept; once per process is enough). */
export function keepTickShape (): Promise<boolean> {
  return new Promise((resolve) => {
    process.nextTick(() => {
      const entry = executionAsyncResource()
      const isEntry = typeof entry === 'object' && entry !== null && Object.getOwnPropertySymbols(entry).length >= 2 && 'callback' in entry
      if (isEntry && kept === undefined) kept = entry
      resolve(isEntry)
    })
  })
}

/** The kept entry, if any (tests). */
export function keptTickEntry (): object | undefined {
  return kept
}
