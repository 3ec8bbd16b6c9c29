import t from 'tap'
import { RequestIds } from '../../lib/request-id.js'

t.test('request ids are the prefix and the counter in 10 hex digits, across every table boundary', async (t) => {
  const ids = new RequestIds('a1b2c3')
  const plain = (seq: number): string => 'a1b2c3' + seq.toString(16).padStart(10, '0')
  let bad = 0
  for (let seq = 1; seq <= 3 * 4096 + 5; seq++) if (ids.next() !== plain(seq)) bad++
  t.equal(bad, 0, 'the first 12,293 ids')
  for (const start of [2 ** 31 - 3, 2 ** 32 - 3, 16 ** 10 - 3, 2 ** 52 - 3]) {
    ids.skipTo(start)
    for (let seq = start + 1; seq <= start + 6; seq++) t.equal(ids.next(), plain(seq), `id ${seq}`)
  }
  const set = new Set<string>()
  const fresh = new RequestIds('ffffff')
  for (let i = 0; i < 10_000; i++) set.add(fresh.next())
  t.equal(set.size, 10_000, 'unique')
})
