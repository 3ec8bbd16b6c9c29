/**
 * CSPRNG bytes served from a pre-filled buffer. crypto.randomBytes costs a call into OpenSSL per
 * request (13% of the gate's CPU for GET /challenge in `npm run profile`); filling 16 KiB at a time
 * and slicing it amortises that. The bytes are still the CSPRNG's, each used once.
 */
import { randomFillSync } from 'node:crypto'

/** Nonces per refill of the nonce pool; each takes an 18-byte group (24 base64url characters). */
const NONCES = 512

export class RandomPool {
  readonly #buf: Buffer
  #pos: number
  #hex: string | undefined
  readonly #nonceBytes = Buffer.allocUnsafeSlow(18 * NONCES)
  #nonceText = ''
  #nonces = NONCES

  constructor (size = 16384) {
    this.#buf = Buffer.allocUnsafeSlow(size)
    this.#pos = size
  }

  /**
   * A nonce: 16 fresh random bytes as canonical base64url (22 characters), a slice of a text
   * encoded once per 512 nonces. Each nonce's bytes start an 18-byte group, a whole number of
   * base64 quanta (24 characters); its 22nd character also carries the top four bits of the
   * group's 17th byte, which are cleared before encoding, so that the slice is exactly the 16 bytes'
   * own encoding. (One base64url call per nonce cost as much as the rest of the memory store's issue.)
   */
  nonce (): string {
    if (this.#nonces === NONCES) {
      const b = this.#nonceBytes
      randomFillSync(b)
      for (let i = 16; i < b.length; i += 18) b[i]! &= 0x0f
      this.#nonceText = b.toString('base64url')
      this.#nonces = 0
    }
    const at = 24 * this.#nonces++
    return this.#nonceText.slice(at, at + 22)
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
