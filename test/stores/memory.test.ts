import t from 'tap'
import { randomBytes } from 'node:crypto'
import { MemoryStore } from '../../lib/stores/memory.js'
import { ConsumeStatus, IssueStatus } from '../../lib/stores/store.js'
import { storeConformance } from './conformance.js'

storeConformance(t, 'memory', async () => new MemoryStore({ maxChallenges: 100_000, sweepIntervalMs: 50 }))

t.test('memory: a full store refuses new challenges and never evicts a live one', async (t) => {
  let now = 1_000_000
  const store = new MemoryStore({ maxChallenges: 2, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 100, perSecond: 100 }
  const mk = (): Parameters<MemoryStore['issue']>[0] => ({
    fingerprint: 'f'.repeat(64), rate, nonce: randomBytes(16).toString('base64url'), seed: '0'.repeat(64),
    iterations: 16, checkpointInterval: 4, deadlineMs: 1000, graceMs: 1000,
  })
  const a = mk()
  t.equal((await store.issue(a)).status, IssueStatus.OK)
  t.equal((await store.issue(mk())).status, IssueStatus.OK)
  t.equal((await store.issue(mk())).status, IssueStatus.FULL)
  t.equal((await store.consume({ fingerprint: a.fingerprint, nonce: a.nonce, rate })).status, ConsumeStatus.OK, 'live challenge kept')
  t.equal((await store.issue(mk())).status, IssueStatus.FULL, 'a tombstone still counts until it expires')
  now += 2001
  t.equal((await store.issue(mk())).status, IssueStatus.OK, 'expired records make room')
  t.equal(store.size, 1)
})

t.test('memory: the sweep drops idle buckets and expired records', async (t) => {
  let now = 0
  const store = new MemoryStore({ maxChallenges: 10, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  await store.issue({ fingerprint: 'a'.repeat(64), rate: { burst: 2, perSecond: 1 }, nonce: randomBytes(16).toString('base64url'), seed: '0'.repeat(64), iterations: 16, checkpointInterval: 4, deadlineMs: 10, graceMs: 10 })
  t.equal(store.size, 1)
  now = 5000
  store.sweep()
  t.equal(store.size, 0)
})

t.test('memory: a closed store refuses operations', async (t) => {
  const store = new MemoryStore({ maxChallenges: 10 })
  await store.close()
  await t.rejects(store.ping())
})
