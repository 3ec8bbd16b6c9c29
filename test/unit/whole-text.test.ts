import t from 'tap'
import fc from 'fast-check'
import { wholeText } from '../../lib/whole-text.js'

t.test('wholeText writes what String writes, for any number', async (t) => {
  const samples = [0, -0, 1, 9, 1e9 - 1, 1e9, 1e9 + 1, 2 ** 31, 2 ** 32 + 7, Date.now(), 1e12, 1e15 + 3, 9e15 - 1, 9e15, 2 ** 53, 2 ** 53 + 2, 1e21, 1e21 + 4096, -5, -1e12, 0.5, 1e9 + 0.5, Number.NaN, Infinity, -Infinity, Number.MAX_VALUE, Number.MIN_VALUE]
  for (const n of samples) t.equal(wholeText(n), String(n), String(n))
  fc.assert(fc.property(fc.oneof(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 1e9, max: 2e13 }), fc.double()), (n) => {
    if (wholeText(n) !== String(n)) throw new Error(`${n}: ${wholeText(n)}`)
  }), { numRuns: 20000 })
})
