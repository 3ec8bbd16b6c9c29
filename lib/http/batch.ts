/**
 * Write coalescing: the responses the gate finishes during one turn of the event loop are written
 * together at the end of that turn (a setImmediate, which runs once the poll phase has handled
 * every socket that was ready), not each as soon as its handler finishes.
 *
 * Why: a response written to a peer that is waiting for it wakes the peer up. When the gate is the
 * busier side (a load balancer, nginx on the same host, agents or a load generator on the same
 * machine), its peer drains each response faster than the gate makes the next one and goes back to
 * sleep, so every response costs a wake-up on both sides (in the writer's system call and in the
 * woken peer; `perf` showed 0.9 us per GET /challenge in the gate's write alone, against 0.25 us
 * for a bare node:https server whose peer was rarely asleep). Written back to back, a turn's
 * responses wake the peer once. In same-run alternations this took the gate from about 18 to
 * 16.6 us of CPU per GET /challenge and from 0.78x to 0.83-0.84x the bare server's requests per
 * second (docs/benchmarks.md, session 10).
 *
 * What it costs: a response waits for the other requests already read in the same turn to be
 * handled (each a few microseconds for GET /challenge), never for new I/O, a timer or another
 * turn. With one request in a turn, it is written in the same turn as before.
 *
 * The batch writes each entry's status, flat header list and body with writeHead and end (the
 * public API: Node's keep-alive, pipelining and `Connection: close` handling apply as usual), all
 * of a run back to back, then calls `written` for each, in the order the entries were added (the
 * books, the log line above all, between the writes would spread them out again). A response
 * whose socket was destroyed in the meantime is not written (it could not be delivered), but
 * `written` is still called: every entry is booked exactly once.
 */
import type { ServerResponse } from 'node:http'
// The module's binding, not the global (a lazy accessor: a getter call per use).
import { performance } from 'node:perf_hooks'

/** What one queued response carries (the gate's request context implements it). */
export interface Pending {
  readonly res: ServerResponse
  status: number
  headers: string[]
  body: string
}

export class ResponseBatch<T extends Pending> {
  #queue: T[] = []
  /** The array the next turn fills while this one is written (no array allocated per turn). */
  #spare: T[] = []
  readonly #written: (entry: T, err: Error | undefined, at: number) => void
  readonly #clock: () => number
  readonly #run = (): void => { this.flush() }
  /** Per entry of a run: its write's failure and the clock when it was written. */
  readonly #errors: Array<Error | undefined> = []
  #times = new Float64Array(64)

  /**
   * `written(entry, err, at)`: for each entry, once the whole run is written (err: its writeHead or
   * end threw; at: `clock()` right after its own write, so that a duration ends at the write and
   * not at the booking).
   */
  constructor (written: (entry: T, err: Error | undefined, at: number) => void, clock: () => number = performance.now.bind(performance)) {
    this.#written = written
    this.#clock = clock
  }

  /** Responses waiting for the end of this turn. */
  get size (): number { return this.#queue.length }

  /** Queue `entry`'s response for the end of this turn of the event loop. */
  add (entry: T): void {
    if (this.#queue.length === 0) setImmediate(this.#run)
    this.#queue.push(entry)
  }

  /**
   * Write every queued response now (the scheduled run does this; so may a caller that must not
   * wait). Entries added while it runs go to the next run.
   */
  flush (): void {
    const queue = this.#queue
    if (queue.length === 0) return
    this.#queue = this.#spare
    const n = queue.length
    const errors = this.#errors
    // A run's times matter only within the run: a larger table replaces the old one, uncopied.
    if (this.#times.length < n) this.#times = new Float64Array(2 * n)
    const times = this.#times
    // Every write first, back to back (what the batch is for), each one's time and failure noted;
    // then the books, in the same order.
    for (let i = 0; i < n; i++) {
      const entry = queue[i]!
      const res = entry.res
      let err: Error | undefined
      if (!res.destroyed) {
        try {
          res.writeHead(entry.status, entry.headers)
          res.end(entry.body)
        } catch (e) {
          err = e as Error
          res.destroy()
        }
      } else {
        res.statusCode = entry.status // what the books record for it
      }
      errors[i] = err
      times[i] = this.#clock()
    }
    let thrown: unknown
    for (let i = 0; i < n; i++) {
      // A throwing `written` must not cost the entries after it their books.
      try { this.#written(queue[i]!, errors[i], times[i]!) } catch (e) { thrown ??= e }
      errors[i] = undefined
    }
    queue.length = 0
    this.#spare = queue
    if (thrown !== undefined) throw thrown
  }
}
