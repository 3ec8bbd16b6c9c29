/**
 * CSPRNG bytes served from a pre-filled buffer. crypto.randomBytes costs a call into OpenSSL per
 * request (13% of the gate's CPU for GET /challenge in `npm run profile`); filling 16 KiB at a time
 * and slicing it amortises that. The bytes are still the CSPRNG's, each used once.
 */
import { randomFillSync } from 'node:crypto'

export class RandomPool {
  readonly #buf: Buffer
  #pos: number
  #hex: string | undefined

  constructor (size = 16384) {
    this.#buf = Buffer.allocUnsafeSlow(size)
    this.#pos = size
  }

  /**
   * `n` fresh random bytes as lowercase hex: a slice of the pool encoded whole once per refill
   * (one encoding call per 16 KiB instead of one per seed; V8 slices without copying).
   */
  hex (n: number): string {
    const at = this.#take(n)
    this.#hex ??= this.#buf.toString('hex')
    return this.#hex.slice(2 * at, 2 * (at + n))
  }

  /** `n` fresh random bytes as base64url (no padding). */
  base64url (n: number): string {
    const at = this.#take(n)
    return this.#buf.toString('base64url', at, at + n)
  }

  /** Where the next `n` unused bytes start (encoded in place: no Buffer view per call). */
  #take (n: number): number {
    if (n > this.#buf.length) throw new RangeError('request larger than the pool')
    if (this.#pos + n > this.#buf.length) {
      randomFillSync(this.#buf)
      this.#hex = undefined
      this.#pos = 0
    }
    const at = this.#pos
    this.#pos += n
    return at
  }
}
