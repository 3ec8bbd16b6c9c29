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
  // The last nonce and hex string handed out, and where their bytes are (nonceBytes, hexBytes).
  #lastNonce: string | undefined = undefined
  #lastNonceAt = 0
  #lastHex: string | undefined = undefined
  #lastHexAt = 0

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
    const n = this.#nonces++
    const nonce = this.#nonceText.slice(24 * n, 24 * n + 22)
    this.#lastNonce = nonce
    this.#lastNonceAt = 18 * n
    return nonce
  }

  /**
   * Copy the 16 bytes of `s` into `into` when `s` is the last nonce this pool handed out (its bytes
   * are still in the pool: it refills only on a later call), and say whether it did. The memory
   * store keeps a challenge's nonce and seed as bytes; for the ones the gate has just drawn, this
   * copy replaces decoding their text (a third of the store's cost of an issue).
   */
  nonceBytes (s: string, into: Uint8Array): boolean {
    if (s !== this.#lastNonce || into.length < 16) return false
    const from = this.#nonceBytes
    const start = this.#lastNonceAt
    for (let i = 0; i < 16; i++) into[i] = from[start + i]!
    return true
  }

  /** The same for the last hex string (its s.length / 2 bytes). */
  hexBytes (s: string, into: Uint8Array): boolean {
    const n = s.length >> 1
    if (s !== this.#lastHex || into.length < n) return false
    const from = this.#buf
    const start = this.#lastHexAt
    for (let i = 0; i < n; i++) into[i] = from[start + i]!
    return true
  }

  /**
   * `n` fresh random bytes as lowercase hex: a slice of the pool encoded whole once per refill
   * (one encoding call per 16 KiB instead of one per seed; V8 slices without copying).
   */
  hex (n: number): string {
    const at = this.#take(n)
    this.#hex ??= this.#buf.toString('hex')
    const text = this.#hex.slice(2 * at, 2 * (at + n))
    this.#lastHex = text
    this.#lastHexAt = at
    return text
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
