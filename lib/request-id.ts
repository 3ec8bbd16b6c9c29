/**
 * Request ids: a per-process prefix and a counter in 10 hex digits (more past 16^10 requests).
 * They only tie log lines together, so they need to be unique, not unpredictable. The counter's
 * last three digits come from a table and the rest is rebuilt once every 4,096 ids: one
 * concatenation per request instead of a number-to-hex conversion, a pad and a concatenation.
 */
const LOW = Array.from({ length: 4096 }, (_, i) => i.toString(16).padStart(3, '0'))

export class RequestIds {
  readonly #prefix: string
  #seq = 0
  #high = ''

  constructor (prefix: string) {
    this.#prefix = prefix
  }

  /** The next id: `prefix` + the counter (from 1) in at least 10 lowercase hex digits. */
  next (): string {
    const seq = ++this.#seq
    const low = seq % 4096
    if (low === 0 || this.#high === '') this.#high = this.#prefix + Math.floor(seq / 4096).toString(16).padStart(7, '0')
    return this.#high + LOW[low]!
  }

  /** Continue after `seq` ids (tests: the counter's far end). */
  skipTo (seq: number): void {
    this.#seq = seq
    this.#high = ''
  }
}
