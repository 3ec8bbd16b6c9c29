import t from 'tap'
import { RandomPool } from '../../lib/random.js'

t.test('hex and nonces give fresh bytes of the asked length, across refills', async (t) => {
  const pool = new RandomPool(64) // refills every few calls
  const seen = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const h = pool.hex(32)
    t.match(h, /^[0-9a-f]{64}$/)
    seen.add(h)
  }
  t.equal(seen.size, 200, 'no value repeats (each byte is used once)')
})

t.test('nonces are 16 random bytes in canonical base64url, across refills of the nonce pool', async (t) => {
  const pool = new RandomPool()
  const seen = new Set<string>()
  let bad = 0
  const lastChars = new Set<string>()
  const ones = new Array<number>(128).fill(0)
  const n = 512 * 5 + 7 // five refills and some
  for (let i = 0; i < n; i++) {
    const nonce = pool.nonce()
    const bytes = Buffer.from(nonce, 'base64url')
    // Canonical: 22 characters, exactly the encoding of its own 16 bytes.
    if (!/^[A-Za-z0-9_-]{22}$/.test(nonce) || bytes.length !== 16 || bytes.toString('base64url') !== nonce) bad++
    seen.add(nonce)
    lastChars.add(nonce[21]!)
    for (let b = 0; b < 128; b++) ones[b]! += (bytes[b >> 3]! >> (b & 7)) & 1
  }
  t.equal(bad, 0, 'every nonce is canonical')
  t.equal(seen.size, n, 'no nonce repeats')
  t.same([...lastChars].sort(), ['A', 'Q', 'g', 'w'], 'the last character takes all four canonical values')
  // Every one of the 128 bits is set about half the time (a cleared or fixed bit would be at 0 or n).
  const skewed = ones.filter((c) => Math.abs(c / n - 0.5) > 0.05).length
  t.equal(skewed, 0, 'no bit of the nonce is fixed')
})

t.test('a request larger than the pool is refused', async (t) => {
  t.throws(() => new RandomPool(16).hex(17), RangeError)
  t.equal(new RandomPool(16).hex(16).length, 32, 'exactly the pool size is fine')
})
