/**
 * CSPRNG bytes served from a pre-filled buffer. crypto.randomBytes costs a call into OpenSSL per
 * request (13% of the gate's CPU for GET /challenge in `npm run profile`); filling 16 KiB at a time
 * and slicing it amortises that. The bytes are still the CSPRNG's, each used once.
 */
import { randomFillSync } from 'node:crypto'

export class RandomPool {
  readonly #buf: Buffer
  #pos: number

  constructor (size = 16384) {
    this.#buf = Buffer.allocUnsafeSlow(size)
    this.#pos = size
  }

  /** `n` fresh random bytes as lowercase hex. */
  hex (n: number): string {
    return this.#take(n).toString('hex')
  }

  /** `n` fresh random bytes as base64url (no padding). */
  base64url (n: number): string {
    return this.#take(n).toString('base64url')
  }

  #take (n: number): Buffer {
    if (n > this.#buf.length) throw new RangeError('request larger than the pool')
    if (this.#pos + n > this.#buf.length) {
      randomFillSync(this.#buf)
      this.#pos = 0
    }
    const out = this.#buf.subarray(this.#pos, this.#pos + n)
    this.#pos += n
    return out
  }
}
