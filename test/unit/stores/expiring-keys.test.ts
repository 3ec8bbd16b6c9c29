import t from 'tap'
import { ExpiringKeys } from '../../../lib/stores/expiring-keys.js'

t.test('a sweep drops expired keys, each within a second of its expiry, and never a live one', async (t) => {
  const k = new ExpiringKeys()
  k.set('a', 1_000)
  k.set('b', 1_500)
  k.set('c', 2_000)
  k.set('d', 60_000)
  k.sweep(999)
  t.equal(k.size, 4, 'nothing expired yet')
  k.sweep(1_000)
  t.same(['a', 'b', 'c', 'd'].map((x) => k.get(x)), [undefined, 1_500, 2_000, 60_000], 'an expiry equal to now has passed')
  k.sweep(1_999)
  t.same(['b', 'c', 'd'].map((x) => k.get(x)), [1_500, 2_000, 60_000], 'b is swept with the second its expiry falls in')
  k.sweep(2_000)
  t.same(['b', 'c', 'd'].map((x) => k.get(x)), [undefined, undefined, 60_000])
  k.sweep(59_999)
  t.equal(k.size, 1)
  k.sweep(60_000)
  t.equal(k.size, 0)
})

t.test('a key set again with a later expiry survives the sweep of its earlier second', async (t) => {
  const k = new ExpiringKeys()
  k.set('a', 1_000)
  k.set('a', 5_000)
  t.equal(k.sweep(1_000), 1, 'its earlier listing looked at')
  t.equal(k.get('a'), 5_000)
  k.sweep(5_000)
  t.equal(k.get('a'), undefined)
  // Set again after it was swept: listed afresh.
  k.set('a', 9_000)
  k.sweep(8_999)
  t.equal(k.get('a'), 9_000)
  k.sweep(9_000)
  t.equal(k.size, 0)
})

t.test('a sweep visits the expired keys, not every live one', async (t) => {
  const k = new ExpiringKeys()
  for (let i = 0; i < 100_000; i++) k.set(`live-${i}`, 300_000)
  for (let i = 0; i < 10; i++) k.set(`old-${i}`, 1_000)
  t.equal(k.sweep(1_000), 10, 'ten expired keys looked at, the 100,000 live ones not')
  t.equal(k.size, 100_000)
})

t.test('asked again within the same second (a full store asks on each refusal), a sweep does not walk again', async (t) => {
  const k = new ExpiringKeys()
  for (let i = 0; i < 1000; i++) k.set(`old-${i}`, 1_000 + i)
  t.equal(k.sweep(2_000), 1000)
  k.set('late', 2_000)
  t.equal(k.sweep(2_999), 0, 'nothing walked within second 2')
  t.equal(k.get('late'), 2_000, 'so the key expiring at its start waits for the next second')
  t.equal(k.sweep(3_000), 1)
  t.equal(k.size, 0)
})
