import t from 'tap'
import { RandomPool } from '../../lib/random.js'

t.test('hex and base64url give fresh bytes of the asked length, across refills', async (t) => {
  const pool = new RandomPool(64) // refills every few calls
  const seen = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const h = pool.hex(32)
    t.match(h, /^[0-9a-f]{64}$/)
    const b = pool.base64url(16)
    t.match(b, /^[A-Za-z0-9_-]{22}$/)
    t.equal(Buffer.from(b, 'base64url').length, 16)
    seen.add(h)
    seen.add(b)
  }
  t.equal(seen.size, 400, 'no value repeats (each byte is used once)')
})

t.test('a request larger than the pool is refused', async (t) => {
  t.throws(() => new RandomPool(16).hex(17), RangeError)
  t.equal(new RandomPool(16).hex(16).length, 32, 'exactly the pool size is fine')
})
