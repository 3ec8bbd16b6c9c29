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

t.test('nonceWords and hexWords copy the words of the last nonce and hex string only', async (t) => {
  const pool = new RandomPool(64)
  const into = new Int32Array(8)
  const bytes = (n: number): Buffer => Buffer.from(into.buffer, 0, n)
  t.notOk(pool.nonceWords('', into), 'nothing drawn yet: not even the empty string')
  t.notOk(pool.hexWords('', into))
  for (let i = 0; i < 600; i++) { // across refills of both pools
    const nonce = pool.nonce()
    const seed = pool.hex(32)
    if (!pool.nonceWords(nonce, into) || !bytes(16).equals(Buffer.from(nonce, 'base64url'))) { t.fail(`nonce ${i}`); return }
    if (!pool.hexWords(seed, into) || bytes(32).toString('hex') !== seed) { t.fail(`seed ${i}`); return }
    if (i % 7 === 0) pool.hex(3) // an odd draw between: the next one still starts on a word
  }
  const nonce = pool.nonce()
  const seed = pool.hex(32)
  t.ok(pool.nonceWords(nonce.slice(0, 11) + nonce.slice(11), into), 'an equal string is the same nonce')
  t.notOk(pool.nonceWords(seed.slice(0, 22), into), 'a string that is not the last nonce')
  t.notOk(pool.hexWords(nonce, into), 'a nonce is not the last hex string')
  t.notOk(pool.hexWords(seed, new Int32Array(7)), 'nor is anything copied past the end of the target')
  const odd = pool.hex(3)
  t.notOk(pool.hexWords(odd, into), 'a hex string that is not whole words is not copied')
  pool.nonce()
  t.notOk(pool.nonceWords(nonce, into), 'an earlier nonce is not the last one')
})

t.test('a pool size that is not whole words is refused', async (t) => {
  t.throws(() => new RandomPool(30), RangeError)
  t.doesNotThrow(() => new RandomPool(32))
})
