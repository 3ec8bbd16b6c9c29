import t from 'tap'
import { selectChain } from '../../../lib/chain/select.js'
import { createHash, randomBytes } from 'node:crypto'
import { VerifyPool } from '../../../lib/verification/pool.js'
import { PoolBusyError } from '../../../lib/errors.js'
import type { Segment } from '../../../lib/verification/messages.js'

/** A segment of n keyed links computed with node:crypto (docs/protocol.md section 3). */
function segment (n: number, wrong = false): Segment {
  const start = randomBytes(32)
  const key = randomBytes(32)
  let d: Buffer = start
  for (let i = 0; i < n; i++) d = createHash('sha256').update(Buffer.from(d.map((x, j) => x ^ key[j]!))).digest()
  if (wrong) d = Buffer.from(d.map((x) => x ^ 1))
  return { start, key, n, expected: d }
}

t.test('the pool verifies batches in parallel and reports the first failing segment', async (t) => {
  const pool = new VerifyPool({ size: 2, maxQueue: 8, taskTimeoutMs: 10_000 })
  t.teardown(() => pool.close())
  t.equal(await pool.ready(), (await selectChain()).name, 'the best available chain')
  t.ok(pool.up)
  t.same(await pool.verify([[segment(10), segment(20)], [segment(30)]], false), { ok: true, failed: -1 })
  t.same(await pool.verify([[segment(10), segment(20)], [segment(5), segment(7, true)]], false), { ok: false, failed: 3 })
  t.same(await pool.verify([[segment(0, true)]], false), { ok: false, failed: 0 })
})

t.test('admission is bounded by workers + maxQueue, and reservations are released', async (t) => {
  const pool = new VerifyPool({ size: 1, maxQueue: 1, taskTimeoutMs: 10_000 })
  t.teardown(() => pool.close())
  await pool.ready()
  t.ok(pool.tryReserve(2))
  t.notOk(pool.tryReserve(1), 'full')
  await t.rejects(pool.verify([[segment(1)]], false), PoolBusyError)
  pool.release(2)
  t.ok(pool.tryReserve(1))
  t.same(await pool.verify([[segment(3)]], true), { ok: true, failed: -1 })
  t.same(pool.stats(), { size: 1, busy: 0, queued: 0, reserved: 0 })
})

t.test('a task over its timeout is refused and its worker replaced', async (t) => {
  const errors: Error[] = []
  const pool = new VerifyPool({ size: 1, maxQueue: 4, taskTimeoutMs: 50, onWorkerError: (e) => errors.push(e) })
  t.teardown(() => pool.close())
  await pool.ready()
  const huge = { start: randomBytes(32), key: randomBytes(32), n: 1e9, expected: randomBytes(32) }
  await t.rejects(pool.verify([[huge]], false), { name: 'PoolBusyError', reason: 'timeout' })
  t.equal(errors.length, 1)
  await pool.ready()
  t.same(await pool.verify([[segment(5)]], false), { ok: true, failed: -1 }, 'the replacement works')
})

t.test('closing the pool refuses queued and new work', async (t) => {
  const pool = new VerifyPool({ size: 1, maxQueue: 4, taskTimeoutMs: 10_000 })
  await pool.ready()
  const long = pool.verify([[{ start: randomBytes(32), key: randomBytes(32), n: 5e7, expected: randomBytes(32) }]], false)
  const queued = pool.verify([[segment(1)]], false)
  const refused = [t.rejects(long, { name: 'PoolBusyError', reason: 'closed' }), t.rejects(queued, { name: 'PoolBusyError', reason: 'closed' })]
  await pool.close()
  await Promise.all(refused)
  t.notOk(pool.up)
  t.notOk(pool.tryReserve(1))
})
