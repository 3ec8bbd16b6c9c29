import t from 'tap'
import { randomBytes } from 'node:crypto'
import { MemoryStore } from '../../lib/stores/memory.js'
import { RandomPool } from '../../lib/random.js'
import { AuthorizeStatus, ConsumeStatus, IssueStatus, TakeStatus, type BucketSpec, type OnceKey } from '../../lib/stores/store.js'
import { storeConformance } from './conformance.js'

storeConformance(t, 'memory', async () => new MemoryStore({ maxChallenges: 100_000, sweepIntervalMs: 50 }))

/** A small challenge of `fingerprint` with a fresh nonce (and `once`, when given). */
function challenge (fingerprint: string, rate: BucketSpec, once?: OnceKey): Parameters<MemoryStore['issue']>[0] {
  return {
    fingerprint,
    rate,
    nonce: randomBytes(16).toString('base64url'),
    seed: '0'.repeat(64),
    iterations: 16,
    checkpointInterval: 4,
    deadlineMs: 1000,
    graceMs: 1000,
    ...(once === undefined ? {} : { once }),
  }
}

t.test('memory: a full store refuses new challenges and never evicts a live one', async (t) => {
  let now = 1_000_000
  const store = new MemoryStore({ maxChallenges: 2, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 100, perSecond: 100 }
  const mk = (): Parameters<MemoryStore['issue']>[0] => challenge('f'.repeat(64), rate)
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

t.test('memory: a full store\'s 503 spends nothing: no token, no single-use key', async (t) => {
  const now = 1_000_000
  const store = new MemoryStore({ maxChallenges: 1, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 3, perSecond: 0.001 }
  const mk = (once?: OnceKey): Parameters<MemoryStore['issue']>[0] => challenge('e'.repeat(64), rate, once)
  t.equal((await store.issue(mk())).status, IssueStatus.OK)
  const once = { id: randomBytes(16).toString('hex'), ttlMs: 60_000 }
  for (let i = 0; i < 5; i++) {
    const full = await store.issue(mk(once))
    t.equal(full.status, IssueStatus.FULL)
    t.equal(full.rate.remaining, 2, 'no token taken')
  }
  t.equal((await store.take({ fingerprint: 'e'.repeat(64), rate, once })).status, TakeStatus.OK, 'the once-key was not recorded: admitted once')
})

t.test('memory: single-use keys are bounded by maxChallenges; a full map fails closed, still tells a replay, and frees as keys expire', async (t) => {
  let now = 1_000_000
  const store = new MemoryStore({ maxChallenges: 3, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1000, perSecond: 1000 }
  const key = (id: string): { id: string, ttlMs: number } => ({ id, ttlMs: 1000 })
  const f = 'f'.repeat(64)
  for (const id of ['a', 'b', 'c']) t.equal((await store.take({ fingerprint: f, rate, once: key(id) })).status, TakeStatus.OK)
  // An attacker's fourth key, through each operation that claims one: a store failure (503), nothing written.
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['take', async () => await store.take({ fingerprint: f, rate, once: key('d') })],
    ['consume', async () => await store.consume({ fingerprint: f, nonce: randomBytes(16).toString('base64url'), rate, once: key('d') })],
    ['authorize', async () => await store.authorize({ fingerprint: f, rate, once: key('d') })],
  ]
  for (const [op, call] of calls) {
    await t.rejects(call(), { name: 'StoreUnavailableError', op }, `${op}: the map is full`)
  }
  t.equal((await store.take({ fingerprint: f, rate, once: key('a') })).status, TakeStatus.REPLAYED, 'a replay is still refused as one')
  // Expired, but not yet swept (a key is swept at the end of the second it expires in): a full map
  // sweeps before it refuses.
  now += 1000
  t.equal((await store.take({ fingerprint: f, rate, once: key('d') })).status, TakeStatus.OK, 'expired keys make room, without waiting for the sweep')
})

t.test('memory: a flood of fresh once-keys refused with 429 records none: the map does not fill, another identity is served', async (t) => {
  const now = 1_000_000
  const store = new MemoryStore({ maxChallenges: 3, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const tight = { burst: 1, perSecond: 0.001 }
  const key = (): { id: string, ttlMs: number } => ({ id: randomBytes(16).toString('hex'), ttlMs: 60_000 })
  const flooder = 'f'.repeat(64)
  t.equal((await store.take({ fingerprint: flooder, rate: tight, once: key() })).status, TakeStatus.OK, 'its one token, and one key of three')
  const statuses = new Set<number>()
  for (let i = 0; i < 300; i++) {
    statuses.add((await store.take({ fingerprint: flooder, rate: tight, once: key() })).status)
    statuses.add((await store.consume({ fingerprint: flooder, nonce: randomBytes(16).toString('base64url'), rate: tight, once: key() })).status)
    statuses.add(store.issue({ fingerprint: flooder, rate: tight, nonce: randomBytes(16).toString('base64url'), seed: '0'.repeat(64), iterations: 16, checkpointInterval: 4, deadlineMs: 1000, graceMs: 1000, once: key() }).status)
  }
  t.same([...statuses], [TakeStatus.RATE_LIMITED], '900 fresh keys, each 429 (the three RATE_LIMITED statuses are all 1), none a 503')
  t.equal((await store.authorize({ fingerprint: flooder, rate: tight, once: key() })).status, AuthorizeStatus.NO_GRANT, 'its upstream token, a second key')
  for (let i = 0; i < 300; i++) await store.authorize({ fingerprint: flooder, rate: tight, once: key() })
  const other = 'a'.repeat(64)
  t.equal((await store.take({ fingerprint: other, rate: tight, once: key() })).status, TakeStatus.OK, 'another identity is served: the third key')
  await t.rejects(store.take({ fingerprint: 'b'.repeat(64), rate: tight, once: key() }), { name: 'StoreUnavailableError', op: 'take' }, 'a fourth admitted key finds the map full')
  t.equal((await store.take({ fingerprint: 'b'.repeat(64), rate: tight })).status, TakeStatus.OK, 'that 503 took no token')
})

t.test('memory: a replay while the once-key map is full is REPLAYED and takes no token', async (t) => {
  const now = 1_000_000
  const store = new MemoryStore({ maxChallenges: 1, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const tight = { burst: 2, perSecond: 0.001 }
  const once = { id: 'k', ttlMs: 60_000 }
  const f = 'f'.repeat(64)
  t.equal((await store.take({ fingerprint: f, rate: tight, once })).status, TakeStatus.OK)
  for (let i = 0; i < 5; i++) t.equal((await store.take({ fingerprint: f, rate: tight, once })).status, TakeStatus.REPLAYED)
  t.equal((await store.take({ fingerprint: f, rate: tight })).status, TakeStatus.OK, 'the second token is still there')
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

t.test('memory: generations behave like one map (differential test against a plain model)', async (t) => {
  // Random issues, claims and clock steps, with two record lifetimes mixed, against a model that
  // keeps every record in one Map and checks expiry on each lookup.
  let now = 5_000_000
  const store = new MemoryStore({ maxChallenges: 1_000_000, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1e9, perSecond: 1e9 }
  const fpA = 'a'.repeat(64)
  const fpB = 'b'.repeat(64)
  const model = new Map<string, { fp: string, deadline: number, expiresAt: number, consumed: boolean }>()
  const nonces: string[] = []
  let seed = 12345
  // A seeded LCG, reading its high bits (the low bits of an LCG are far from random).
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return Math.floor(seed / 2147483648 * n) }
  const statuses: Record<number, number> = {}
  for (let step = 0; step < 20_000; step++) {
    const op = rnd(10)
    if (op < 4) {
      const long = rnd(2) === 0
      const deadlineMs = long ? 10_000 : 1_500
      const graceMs = long ? 2_000 : 500
      const fp = rnd(2) === 0 ? fpA : fpB
      const nonce = randomBytes(16).toString('base64url')
      const r = await store.issue({ fingerprint: fp, rate, nonce, seed: '0'.repeat(64), iterations: 16, checkpointInterval: 4, deadlineMs, graceMs })
      if (r.status !== IssueStatus.OK) { t.fail(`step ${step}: issue refused`); return }
      model.set(nonce, { fp, deadline: now + deadlineMs, expiresAt: now + deadlineMs + graceMs, consumed: false })
      nonces.push(nonce)
    } else if (op < 8 && nonces.length > 0) {
      // Half from the last few issued (live), half from up to ~20 s back (expired, past grace).
      const nonce = nonces[nonces.length - 1 - rnd(Math.min(nonces.length, rnd(2) === 0 ? 20 : 1500))]!
      const fp = rnd(8) === 0 ? fpB : fpA
      const m = model.get(nonce)!
      const expected = m.expiresAt <= now || m.fp !== fp
        ? ConsumeStatus.UNKNOWN
        : m.consumed ? ConsumeStatus.CONSUMED : now > m.deadline ? ConsumeStatus.EXPIRED : ConsumeStatus.OK
      if ((expected === ConsumeStatus.OK || expected === ConsumeStatus.EXPIRED)) m.consumed = true
      const r = await store.consume({ fingerprint: fp, nonce, rate })
      statuses[r.status] = (statuses[r.status] ?? 0) + 1
      if (r.status !== expected) { t.equal(r.status, expected, `step ${step}: claim of a record issued ${now - (m.deadline - 1)} ms ago`); return }
    } else if (op === 8) {
      now += rnd(100)
    } else {
      store.sweep()
      const live = [...model.values()].filter((m) => m.expiresAt > now).length
      if (store.size < live) { t.fail(`step ${step}: size ${store.size} < ${live} live records`); return }
    }
  }
  t.same(Object.keys(statuses).sort(), ['0', '2', '3', '4'], `every claim outcome happened: ${JSON.stringify(statuses)}`)
  now += 60_000
  store.sweep()
  t.equal(store.size, 0, 'everything expired is dropped')
})

t.test('memory: limited() tells an empty bucket at once and changes nothing', async (t) => {
  let now = 5_000_000
  const store = new MemoryStore({ maxChallenges: 10, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const fingerprint = 'e'.repeat(64)
  const rate = { burst: 2, perSecond: 1 }
  t.equal(store.limited(fingerprint, rate), undefined, 'no bucket yet: a full one')
  t.equal((await store.take({ fingerprint, rate })).status, TakeStatus.OK)
  for (let i = 0; i < 5; i++) t.equal(store.limited(fingerprint, rate), undefined, 'one token left, however often asked')
  t.equal((await store.take({ fingerprint, rate })).status, TakeStatus.OK, 'asking took nothing: the second token is still there')
  const empty = store.limited(fingerprint, rate)
  t.ok(empty !== undefined, 'empty bucket')
  t.same(empty, { limit: 2, remaining: 0, resetMs: 2000, retryAfterMs: 1000 }, 'the state a take would report')
  const taken = await store.take({ fingerprint, rate })
  t.equal(taken.status, TakeStatus.RATE_LIMITED, 'and a take agrees')
  t.same(taken.rate, empty)
  now += 999
  t.ok(store.limited(fingerprint, rate) !== undefined, 'still empty 1 ms before a token')
  now += 1
  t.equal(store.limited(fingerprint, rate), undefined, 'a whole token after 1 s')
  t.equal(store.limited('d'.repeat(64), rate), undefined, 'another identity has its own bucket')
  await store.close()
  t.equal(store.limited(fingerprint, { burst: 2, perSecond: 0.001 }), undefined, 'a closed store leaves the answer to the store call that follows (which refuses)')
})

t.test('memory: records are kept as bytes, in tables that grow, and come back as they were issued', async (t) => {
  const now = 7_000_000
  const store = new MemoryStore({ maxChallenges: 1_000_000, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1e9, perSecond: 1e9 }
  // Several thousand records in one generation: the columns and the table double several times.
  const issued = Array.from({ length: 5000 }, (_, i) => ({
    fingerprint: i % 3 === 0 ? 'a'.repeat(64) : randomBytes(32).toString('hex'),
    rate,
    nonce: randomBytes(16).toString('base64url'),
    seed: randomBytes(32).toString('hex'),
    iterations: 64 * (1 + (i % 7)),
    checkpointInterval: 64,
    deadlineMs: 1000 + i,
    graceMs: 1000,
  }))
  const refused = issued.filter((req) => store.issue(req).status !== IssueStatus.OK).length
  t.equal(refused, 0, 'every issue accepted')
  let same = 0
  for (const [i, req] of issued.entries()) {
    const r = await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate })
    const expected = { nonce: req.nonce, seed: req.seed, fingerprint: req.fingerprint, iterations: req.iterations, checkpointInterval: 64, issuedAt: now, deadline: now + 1000 + i }
    if (r.status === ConsumeStatus.OK && JSON.stringify(r.challenge) === JSON.stringify(expected)) same++
    else if (same === i) t.same(r, { status: ConsumeStatus.OK, challenge: expected }, `the first record claimed otherwise: ${i}`)
  }
  t.equal(same, 5000, 'every record claimed once, as issued')
  t.equal((await store.consume({ fingerprint: issued[4999]!.fingerprint, nonce: issued[4999]!.nonce, rate })).status, ConsumeStatus.CONSUMED)
})

t.test('memory: nonces and seeds in another form are refused at issue, and found by no lookup', async (t) => {
  let now = 7_000_000
  const store = new MemoryStore({ maxChallenges: 100, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  // One token, one more each second: the clock steps a second before each call that takes one.
  const rate = { burst: 1, perSecond: 1 }
  const fingerprint = 'c'.repeat(64)
  const nonce = randomBytes(16).toString('base64url')
  const good = { fingerprint, rate, nonce, seed: '0'.repeat(64), iterations: 16, checkpointInterval: 4, deadlineMs: 100_000, graceMs: 1000 }
  for (const bad of [
    { nonce: nonce.slice(0, 21) }, { nonce: nonce + 'A' }, { nonce: nonce.slice(0, 21) + 'B' }, { nonce: nonce.slice(0, 21) + '=' },
    { nonce: randomBytes(16).toString('base64') }, { nonce: 'ÀAAAAAAAAAAAAAAAAAAAAA' },
    { seed: '0'.repeat(63) }, { seed: '0'.repeat(63) + 'g' }, { seed: 'g'.repeat(64) }, { seed: '0'.repeat(66) }, { seed: ' '.repeat(64) },
    // A bad digit anywhere (first or second of its pair, mid-string, last) or a character beyond ASCII.
    { seed: '0'.repeat(40) + 'z' + '0'.repeat(23) }, { seed: '0'.repeat(31) + 'x' + '0'.repeat(32) }, { seed: '0'.repeat(63) + 'é' }, { seed: '0'.repeat(62) + '0\u0660' },
  ]) t.throws(() => store.issue({ ...good, ...bad }), TypeError, JSON.stringify(bad))
  t.equal(store.size, 0, 'nothing was added')
  t.equal(store.limited(fingerprint, rate), undefined, 'and no token was taken')
  t.equal(store.issue(good).status, IssueStatus.OK)
  now += 1000
  // 'A' and 'B' decode to the same top two bits; 'B' sets one of the four bits a 16-byte encoding leaves zero.
  const last = nonce[21]!
  const twin = nonce.slice(0, 21) + String.fromCharCode(last.charCodeAt(0) + 1)
  t.equal((await store.consume({ fingerprint, nonce: twin, rate })).status, ConsumeStatus.UNKNOWN, 'a non-canonical twin of the nonce is unknown')
  t.same(store.peek(nonce), { consumed: false, passed: false }, 'and the record is untouched')
  now += 1000
  t.throws(() => store.issue(good), /nonce collision/, 'the same nonce again is never written over the live record')
  now += 1000
  const claim = await store.consume({ fingerprint, nonce, rate })
  t.equal(claim.status, ConsumeStatus.OK, 'the record issued first is the one claimed')
  // A seed in upper case is the same 32 bytes, given back in lower case.
  now += 1000
  const upper = { ...good, nonce: randomBytes(16).toString('base64url'), seed: 'AbCdEf'.repeat(10) + '0A9F' }
  t.equal(store.issue(upper).status, IssueStatus.OK)
  now += 1000
  const c = await store.consume({ fingerprint, nonce: upper.nonce, rate })
  t.equal(c.status === ConsumeStatus.OK && c.challenge.seed, upper.seed.toLowerCase())
})

t.test('memory: nonces and seeds drawn from the gate\'s pool are kept as the bytes their text decodes to', async (t) => {
  const random = new RandomPool(256)
  const now = 7_000_000
  const store = new MemoryStore({ maxChallenges: 100_000, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1e9, perSecond: 1e9 }
  const fingerprint = 'd'.repeat(64)
  const issued: Array<{ nonce: string, seed: string }> = []
  for (let i = 0; i < 2000; i++) { // across refills of both pools
    const nonce = random.nonce()
    const seed = random.hex(32)
    if (store.issue({ fingerprint, rate, nonce, seed, iterations: 16, checkpointInterval: 4, deadlineMs: 1000, graceMs: 1000 }).status !== IssueStatus.OK) { t.fail(`issue ${i}`); return }
    issued.push({ nonce, seed })
  }
  let same = 0
  for (const { nonce, seed } of issued) {
    // Looked up from a fresh copy of the text.
    const r = await store.consume({ fingerprint, nonce: Buffer.from(nonce, 'base64url').toString('base64url'), rate })
    if (r.status === ConsumeStatus.OK && r.challenge.seed === seed && r.challenge.nonce === nonce) same++
  }
  t.equal(same, 2000, 'every record found by its decoded nonce, with its seed')
})

t.test('memory: a new generation that takes over a dropped one\'s columns starts empty', async (t) => {
  let now = 9_000_000
  const store = new MemoryStore({ maxChallenges: 1_000_000, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1e9, perSecond: 1e9 }
  const fingerprint = 'e'.repeat(64)
  const issue = (): string => {
    const nonce = randomBytes(16).toString('base64url')
    if (store.issue({ fingerprint, rate, nonce, seed: randomBytes(32).toString('hex'), iterations: 16, checkpointInterval: 4, deadlineMs: 500, graceMs: 500 }).status !== IssueStatus.OK) throw new Error('refused')
    return nonce
  }
  const old = Array.from({ length: 3000 }, issue)
  for (const nonce of old.slice(0, 1500)) await store.consume({ fingerprint, nonce, rate })
  now += 5000
  store.sweep()
  t.equal(store.size, 0, 'the first generation is dropped')
  // The next generation needs as much room as the last one had: it takes over its columns.
  const fresh = Array.from({ length: 3000 }, issue)
  let unknown = 0
  for (const nonce of old) if ((await store.consume({ fingerprint, nonce, rate })).status === ConsumeStatus.UNKNOWN) unknown++
  t.equal(unknown, 3000, 'no record of the dropped generation is found')
  let ok = 0
  for (const nonce of fresh) if ((await store.consume({ fingerprint, nonce, rate })).status === ConsumeStatus.OK) ok++
  t.equal(ok, 3000, 'every new record is found, unclaimed')
  t.equal(store.size, 3000)
})

t.test('memory: nonces that share their first word, or their place in the table, are told apart', async (t) => {
  const now = 9_000_000
  const store = new MemoryStore({ maxChallenges: 1_000_000, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1e9, perSecond: 1e9 }
  const fingerprint = 'c'.repeat(64)
  // 600 nonces in 20 groups of 30 with the same first four bytes (the word the table keeps beside
  // each slot, and the probe's start), the groups' first words 1 apart: long probe runs, places
  // whose word matches while the rest differs, and tables that double on the way.
  const nonces: string[] = []
  for (let g = 0; g < 20; g++) {
    for (let i = 0; i < 30; i++) {
      const b = randomBytes(16)
      b.writeUInt32LE(0x5a5a0000 + g, 0)
      nonces.push(b.toString('base64url'))
    }
  }
  const seeds = nonces.map(() => randomBytes(32).toString('hex'))
  for (const [i, nonce] of nonces.entries()) {
    const r = store.issue({ fingerprint, rate, nonce, seed: seeds[i]!, iterations: 64, checkpointInterval: 64, deadlineMs: 1000, graceMs: 1000 })
    if (r.status !== IssueStatus.OK) { t.fail(`issue ${i} refused`); return }
  }
  // A nonce of a group's first word that was never issued is unknown, and claims nothing.
  const stranger = randomBytes(16)
  stranger.writeUInt32LE(0x5a5a0000 + 3, 0)
  t.equal((await store.consume({ fingerprint, nonce: stranger.toString('base64url'), rate })).status, ConsumeStatus.UNKNOWN)
  let ok = 0
  for (const [i, nonce] of nonces.entries()) {
    const r = await store.consume({ fingerprint, nonce, rate })
    if (r.status === ConsumeStatus.OK && r.challenge.seed === seeds[i]) ok++
  }
  t.equal(ok, 600, 'each nonce claims its own record (its own seed)')
  let consumed = 0
  for (const nonce of nonces) if ((await store.consume({ fingerprint, nonce, rate })).status === ConsumeStatus.CONSUMED) consumed++
  t.equal(consumed, 600, 'and only once')
})

t.test('memory: two stores in one process keep their own lookups apart (no shared scratch state)', async (t) => {
  // Store A's clock looks a nonce up in store B (a host app's clock or metrics hook may touch
  // another store). A's issue must still file its record under its own nonce and seed.
  const rate = { burst: 1e9, perSecond: 1e9 }
  const fingerprint = 'f'.repeat(64)
  let now = 9_000_000
  const b = new MemoryStore({ maxChallenges: 100, now: () => now, sweepIntervalMs: 0 })
  const other = randomBytes(16).toString('base64url')
  b.issue({ fingerprint, rate, nonce: other, seed: 'ab'.repeat(32), iterations: 16, checkpointInterval: 4, deadlineMs: 1000, graceMs: 1000 })
  const a = new MemoryStore({ maxChallenges: 100, now: () => { b.peek(other); return now }, sweepIntervalMs: 0 })
  t.teardown(async () => { await a.close(); await b.close() })
  const nonce = randomBytes(16).toString('base64url')
  const seed = randomBytes(32).toString('hex')
  t.equal(a.issue({ fingerprint, rate, nonce, seed, iterations: 16, checkpointInterval: 4, deadlineMs: 1000, graceMs: 1000 }).status, IssueStatus.OK)
  now += 1
  const r = await a.consume({ fingerprint, nonce, rate })
  t.equal(r.status, ConsumeStatus.OK, 'the record is found under its own nonce')
  t.equal(r.status === ConsumeStatus.OK && r.challenge.seed, seed, 'with its own seed')
  t.equal((await a.consume({ fingerprint, nonce: other, rate })).status, ConsumeStatus.UNKNOWN, 'and not under the nonce B looked up')
})

t.test('memory: nonces one bit apart, for each of the 128 bits, are distinct records', async (t) => {
  const now = 9_000_000
  const store = new MemoryStore({ maxChallenges: 1000, now: () => now, sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const rate = { burst: 1e9, perSecond: 1e9 }
  const fingerprint = 'a'.repeat(64)
  const base = randomBytes(16)
  const nonces = [base.toString('base64url')]
  for (let bit = 0; bit < 128; bit++) {
    const b = Buffer.from(base)
    b[bit >> 3]! ^= 1 << (bit & 7)
    nonces.push(b.toString('base64url'))
  }
  const seeds = nonces.map(() => randomBytes(32).toString('hex'))
  // A decoding that lost or merged a bit would make two of these one key: 'nonce collision'.
  for (const [i, nonce] of nonces.entries()) t.equal(store.issue({ fingerprint, rate, nonce, seed: seeds[i]!, iterations: 16, checkpointInterval: 4, deadlineMs: 1000, graceMs: 1000 }).status, IssueStatus.OK, `bit ${i - 1}`)
  let same = 0
  for (const [i, nonce] of nonces.entries()) {
    const r = await store.consume({ fingerprint, nonce, rate })
    if (r.status === ConsumeStatus.OK && r.challenge.seed === seeds[i]) same++
  }
  t.equal(same, 129, 'each claims its own record')
})
