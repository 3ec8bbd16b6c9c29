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
 * responses wake the peer once. In bench:http this took the gate from 18.6 to 17.6 us of CPU per
 * GET /challenge and its throughput from 0.78x to 0.86x the bare server's (docs/benchmarks.md).
 *
 * What it costs: a response waits for the other requests already read in the same turn to be
 * handled (each a few microseconds for GET /challenge), never for new I/O, a timer or another
 * turn. With one request in a turn, it is written in the same turn as before.
 *
 * The batch writes each entry's status, flat header list and body with writeHead and end (the
 * public API: Node's keep-alive, pipelining and `Connection: close` handling apply as usual), then
 * calls `written` for it, in the order the entries were added. A response whose socket was
 * destroyed in the meantime is not written (it could not be delivered), but `written` is still
 * called: every entry is booked exactly once.
 */
import type { ServerResponse } from 'node:http'

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
  readonly #written: (entry: T, err: Error | undefined) => void
  readonly #run = (): void => { this.flush() }

  /** `written(entry, err)`: after the entry's response was written (err: writeHead or end threw). */
  constructor (written: (entry: T, err: Error | undefined) => void) {
    this.#written = written
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
    let thrown: unknown
    for (let i = 0; i < queue.length; i++) {
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
      // A throwing `written` must not cost the entries after it their answers.
      try { this.#written(entry, err) } catch (e) { thrown ??= e }
    }
    queue.length = 0
    this.#spare = queue
    if (thrown !== undefined) throw thrown
  }
}
