/**
 * CSPRNG bytes served from a pre-filled buffer: one randomFillSync per 16 KiB (and one per 512
 * nonces) instead of a call into OpenSSL per request. The bytes are still the CSPRNG's, each
 * used once.
 */
import { randomFillSync } from 'node:crypto'

/** Nonces per refill of the nonce pool. */
const NONCES = 512
/**
 * Bytes per nonce in the nonce pool: its 16, then 2 unused, the smallest whole number of base64
 * quanta (3 bytes, 4 characters) that holds 16 bytes, so each nonce's text starts a quantum.
 */
const GROUP = 18

export class RandomPool {
  readonly #size: number
  #buf: Buffer | undefined
  #pos: number
  #hex: string | undefined
  readonly #nonceBytes = Buffer.allocUnsafeSlow(GROUP * NONCES)
  #nonceText = ''
  #nonces = NONCES

  /** `size`: bytes per refill of the pool hex() draws from (allocated at its first use). */
  constructor (size = 16384) {
    this.#size = size
    this.#pos = size
  }

  /**
   * A nonce: 16 fresh random bytes as canonical base64url (22 characters), a slice of a text
   * encoded once per refill. A nonce's 22nd character also carries the top four bits of its
   * group's 17th byte; they are cleared before encoding, so the slice is exactly the 16 bytes'
   * own encoding.
   */
  nonce (): string {
    if (this.#nonces === NONCES) {
      const b = this.#nonceBytes
      randomFillSync(b)
      for (let i = 16; i < b.length; i += GROUP) b[i]! &= 0x0f
      this.#nonceText = b.toString('base64url')
      this.#nonces = 0
    }
    const at = GROUP / 3 * 4 * this.#nonces++
    return this.#nonceText.slice(at, at + 22)
  }

  /**
   * `n` fresh random bytes as lowercase hex: a slice of the pool encoded whole once per refill
   * (V8 slices without copying).
   */
  hex (n: number): string {
    if (n > this.#size) throw new RangeError('request larger than the pool')
    if (this.#pos + n > this.#size) {
      this.#buf ??= Buffer.allocUnsafeSlow(this.#size)
      randomFillSync(this.#buf)
      this.#hex = undefined
      this.#pos = 0
    }
    const at = this.#pos
    this.#pos = at + n
    this.#hex ??= this.#buf!.toString('hex')
    return this.#hex.slice(2 * at, 2 * (at + n))
  }
}
