/**
 * CSPRNG bytes served from a pre-filled buffer. crypto.randomBytes costs a call into OpenSSL per
 * request (13% of the gate's CPU for GET /challenge in `npm run profile`); filling 16 KiB at a time
 * and slicing it amortises that. The bytes are still the CSPRNG's, each used once.
 */
import { randomFillSync } from 'node:crypto'

/** Nonces per refill of the nonce pool. */
const NONCES = 512
/**
 * Bytes per nonce in the nonce pool: its 16, then 8 unused, so that each nonce starts on a word
 * (its bytes are copied as four 32-bit words) and each group is a whole number of base64 quanta
 * (24 bytes, 32 characters).
 */
const GROUP = 24

export class RandomPool {
  readonly #buf: Buffer
  readonly #bufWords: Int32Array
  #pos: number
  #hex: string | undefined
  readonly #nonceBytes = Buffer.allocUnsafeSlow(GROUP * NONCES)
  readonly #nonceWords = new Int32Array(this.#nonceBytes.buffer, this.#nonceBytes.byteOffset, GROUP * NONCES / 4)
  #nonceText = ''
  #nonces = NONCES
  // The last nonce and hex string handed out, and the index of their first word (nonceWords, hexWords).
  #lastNonce: string | undefined = undefined
  #lastNonceAt = 0
  #lastHex: string | undefined = undefined
  #lastHexAt = 0

  /** `size`: bytes per refill of the pool hex() draws from, a multiple of 4. */
  constructor (size = 16384) {
    if (size % 4 !== 0) throw new RangeError('the pool size must be a multiple of 4')
    this.#buf = Buffer.allocUnsafeSlow(size)
    this.#bufWords = new Int32Array(this.#buf.buffer, this.#buf.byteOffset, size / 4)
    this.#pos = size
  }

  /**
   * A nonce: 16 fresh random bytes as canonical base64url (22 characters), a slice of a text
   * encoded once per 512 nonces. Each nonce's bytes start a 24-byte group, a whole number of
   * base64 quanta (32 characters); its 22nd character also carries the top four bits of the
   * group's 17th byte, which are cleared before encoding, so that the slice is exactly the 16 bytes'
   * own encoding. (One base64url call per nonce cost as much as the rest of the memory store's issue.)
   */
  nonce (): string {
    if (this.#nonces === NONCES) {
      const b = this.#nonceBytes
      randomFillSync(b)
      for (let i = 16; i < b.length; i += GROUP) b[i]! &= 0x0f
      this.#nonceText = b.toString('base64url')
      this.#nonces = 0
    }
    const n = this.#nonces++
    const at = GROUP / 3 * 4 * n
    const nonce = this.#nonceText.slice(at, at + 22)
    this.#lastNonce = nonce
    this.#lastNonceAt = GROUP / 4 * n
    return nonce
  }

  /**
   * Copy the 16 bytes of `s`, as four 32-bit words in the platform's byte order (as an Int32Array
   * over those bytes reads them), into `into` when `s` is the last nonce this pool handed out (its
   * bytes are still in the pool: it refills only on a later call), and say whether it did. The
   * memory store keeps a challenge's nonce and seed as words; for the ones the gate has just drawn,
   * this copy replaces decoding their text (a third of the store's cost of an issue).
   */
  nonceWords (s: string, into: Int32Array): boolean {
    if (s !== this.#lastNonce || into.length < 4) return false
    const from = this.#nonceWords
    const at = this.#lastNonceAt
    into[0] = from[at]!
    into[1] = from[at + 1]!
    into[2] = from[at + 2]!
    into[3] = from[at + 3]!
    return true
  }

  /** The same for the last hex string: its s.length / 2 bytes, which hex() drew as whole words. */
  hexWords (s: string, into: Int32Array): boolean {
    const n = s.length >> 3
    if (s !== this.#lastHex || into.length < n || (s.length & 7) !== 0) return false
    const from = this.#bufWords
    const at = this.#lastHexAt
    for (let i = 0; i < n; i++) into[i] = from[at + i]!
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
    this.#lastHexAt = at >> 2
    return text
  }

  /**
   * Where the next `n` unused bytes start, on a word (encoded in place: no Buffer view per call;
   * the up to three bytes skipped to reach a word are never used).
   */
  #take (n: number): number {
    if (n > this.#buf.length) throw new RangeError('request larger than the pool')
    let at = (this.#pos + 3) & ~3
    if (at + n > this.#buf.length) {
      randomFillSync(this.#buf)
      this.#hex = undefined
      at = 0
    }
    this.#pos = at + n
    return at
  }
}
