/**
 * One conformance suite for every Store backend (docs/architecture.md): each backend's test file runs
 * it in one line. It uses the store's own clock (Redis TIME for Redis), so expiry is tested by
 * waiting out short deadlines rather than by faking time.
 */
import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { AuthorizeStatus, BindStatus, ConsumeStatus, IssueStatus, TakeStatus, type BindResult, type Grant, type IssueRequest, type OnceKey, type Store } from '../../lib/stores/store.js'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
const fp = (): string => randomBytes(32).toString('hex')
const LOOSE = { burst: 10_000, perSecond: 10_000 }
const GRANT = { ttlMs: 60_000, maxRequests: 0 }

/** The passes a bind recorded; fails the test's expectations (NaN) when it answered REPLAYED. */
function passesOf (b: BindResult): number {
  return b.status === BindStatus.OK ? b.passes : Number.NaN
}

function issueReq (fingerprint: string, over: Partial<IssueRequest> = {}): IssueRequest {
  return {
    fingerprint,
    rate: LOOSE,
    nonce: randomBytes(16).toString('base64url'),
    seed: randomBytes(32).toString('hex'),
    iterations: 4096,
    checkpointInterval: 256,
    deadlineMs: 10_000,
    graceMs: 10_000,
    ...over,
  }
}

export interface Capabilities {
  /**
   * False where the store's clock is not a wall clock at sub-second resolution: ioredis-mock's TIME
   * rounds the seconds and takes the microseconds from hrtime. The two tests that need it then say
   * so as skips; they run on memory, real Redis and the Cluster.
   */
  wallClock: boolean
}

export function storeConformance (t: Test, name: string, make: () => Promise<Store>, caps: Capabilities = { wallClock: true }): void {
  const clockSkip = caps.wallClock ? false : `${name}: TIME is not a sub-second wall clock (ioredis-mock); covered on the real backends`
  t.test(`${name}: store conformance`, async (t) => {
    const store = await make()
    t.teardown(() => store.close())

    t.test('issue creates a challenge stamped with the store clock', async (t) => {
      const before = Date.now()
      const req = issueReq(fp())
      const r = await store.issue(req)
      t.equal(r.status, IssueStatus.OK)
      if (r.status !== IssueStatus.OK) return
      t.match(r.challenge, { nonce: req.nonce, seed: req.seed, fingerprint: req.fingerprint, iterations: 4096, checkpointInterval: 256 })
      t.ok(Math.abs(r.challenge.issuedAt - before) < 2000, 'issuedAt is close to now')
      t.equal(r.challenge.deadline, r.challenge.issuedAt + req.deadlineMs)
      t.equal(r.rate.limit, LOOSE.burst)
      t.equal(r.rate.remaining, LOOSE.burst - 1)
    })

    t.test('consume claims once: OK, then CONSUMED', async (t) => {
      const req = issueReq(fp())
      const issued = await store.issue(req)
      const a = await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })
      t.equal(a.status, ConsumeStatus.OK)
      if (a.status === ConsumeStatus.OK && issued.status === IssueStatus.OK) {
        t.same(a.challenge, issued.challenge, 'returns what verification needs')
        // ioredis-mock's TIME is not monotonic (rounded seconds + hrtime microseconds), so the
        // clock ordering is checked only where the store has a wall clock
        if (caps.wallClock) t.ok(a.now >= a.challenge.issuedAt, 'the claim is stamped no earlier than the issue')
      }
      const b = await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })
      t.equal(b.status, ConsumeStatus.CONSUMED)
    })

    t.test('a caller changing a returned challenge does not change the stored one', async (t) => {
      const req = issueReq(fp())
      const issued = await store.issue(req)
      if (issued.status !== IssueStatus.OK) { t.fail('issue refused'); return }
      const original = { ...issued.challenge }
      try { (issued.challenge as { seed: string, deadline: number }).seed = '00'.repeat(32); (issued.challenge as { deadline: number }).deadline += 1e9 } catch { /* frozen: refused */ }
      const a = await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })
      t.equal(a.status, ConsumeStatus.OK)
      if (a.status === ConsumeStatus.OK) t.same(a.challenge, original, 'the claim returns the record as issued')
    })

    t.test('an unknown nonce is UNKNOWN', async (t) => {
      const r = await store.consume({ fingerprint: fp(), nonce: randomBytes(16).toString('base64url'), rate: LOOSE })
      t.equal(r.status, ConsumeStatus.UNKNOWN)
    })

    t.test('another identity\'s nonce is UNKNOWN and left untouched', async (t) => {
      const req = issueReq(fp())
      await store.issue(req)
      const thief = await store.consume({ fingerprint: fp(), nonce: req.nonce, rate: LOOSE })
      t.equal(thief.status, ConsumeStatus.UNKNOWN)
      const owner = await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })
      t.equal(owner.status, ConsumeStatus.OK)
    })

    t.test('past the deadline a claim is EXPIRED (and consumed); past the grace it is UNKNOWN', { skip: clockSkip }, async (t) => {
      const req = issueReq(fp(), { deadlineMs: 100, graceMs: 400 })
      const other = issueReq(req.fingerprint, { deadlineMs: 100, graceMs: 400 })
      await store.issue(req)
      await store.issue(other)
      await sleep(200)
      const late = await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })
      t.equal(late.status, ConsumeStatus.EXPIRED)
      if (late.status === ConsumeStatus.EXPIRED) t.ok(late.now > late.challenge.deadline)
      t.equal((await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })).status, ConsumeStatus.CONSUMED)
      await sleep(450)
      t.equal((await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })).status, ConsumeStatus.UNKNOWN, 'tombstone expired')
      t.equal((await store.consume({ fingerprint: other.fingerprint, nonce: other.nonce, rate: LOOSE })).status, ConsumeStatus.UNKNOWN, 'unclaimed record expired')
    })

    t.test('bind records passes for the identity', async (t) => {
      const f = fp()
      const a = issueReq(f)
      const b = issueReq(f)
      await store.issue(a)
      await store.issue(b)
      await store.consume({ fingerprint: f, nonce: a.nonce, rate: LOOSE })
      await store.consume({ fingerprint: f, nonce: b.nonce, rate: LOOSE })
      t.equal(passesOf(await store.bind({ fingerprint: f, nonce: a.nonce, grant: GRANT })), 1)
      t.equal(passesOf(await store.bind({ fingerprint: f, nonce: b.nonce, grant: GRANT })), 2)
    })

    /** Issue, claim and bind one challenge for `f`, with a once-key when given: the bind's answer. */
    const bindFor = async (f: string, grant = GRANT, once?: OnceKey): Promise<BindResult> => {
      const req = issueReq(f)
      await store.issue(req)
      await store.consume({ fingerprint: f, nonce: req.nonce, rate: LOOSE })
      return await store.bind({ fingerprint: f, nonce: req.nonce, grant, ...(once === undefined ? {} : { once }) })
    }

    /** A pass: bindFor, which must record it. */
    const passFor = async (f: string, grant = GRANT): Promise<{ passes: number, grant: Grant }> => {
      const b = await bindFor(f, grant)
      if (b.status !== BindStatus.OK) throw new Error('bind without a once-key answered REPLAYED')
      return b
    }

    t.test('bind with a once-key: the first records a pass and a grant, a replay records neither', async (t) => {
      const f = fp()
      const once = { id: randomBytes(32).toString('hex'), ttlMs: 60_000 }
      const first = await bindFor(f, { ttlMs: 60_000, maxRequests: 2 }, once)
      t.equal(first.status, BindStatus.OK)
      t.equal(passesOf(first), 1)
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.OK, 'one request of two spent')
      const again = await bindFor(f, { ttlMs: 60_000, maxRequests: 2 }, once)
      t.same(again, { status: BindStatus.REPLAYED }, 'the replay is REPLAYED and says nothing else')
      const a = await store.authorize({ fingerprint: f, rate: LOOSE })
      t.equal(a.status === AuthorizeStatus.OK ? a.grant.requests : -1, 0, 'the replay did not refill the budget')
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.NO_GRANT)
      t.equal(passesOf(await bindFor(f)), 2, 'the replay counted no pass')
    })

    t.test('a replayed bind grants nothing to an identity without a grant', async (t) => {
      const f = fp()
      const once = { id: randomBytes(32).toString('hex'), ttlMs: 60_000 }
      // The key is marked by another operation of this identity first: bind sees the same keys.
      t.equal((await store.take({ fingerprint: f, rate: LOOSE, once })).status, TakeStatus.OK)
      t.equal((await bindFor(f, GRANT, once)).status, BindStatus.REPLAYED)
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.NO_GRANT, 'no grant was made')
      t.equal(passesOf(await bindFor(f)), 1, 'and no pass was counted')
    })

    t.test('concurrent binds with one once-key: exactly one records a pass', async (t) => {
      const f = fp()
      const once = { id: randomBytes(32).toString('hex'), ttlMs: 60_000 }
      const reqs = Array.from({ length: 50 }, () => issueReq(f))
      for (const r of reqs) {
        await store.issue(r)
        await store.consume({ fingerprint: f, nonce: r.nonce, rate: LOOSE })
      }
      const all = await Promise.all(reqs.map(async (r) => await store.bind({ fingerprint: f, nonce: r.nonce, grant: GRANT, once })))
      t.equal(all.filter((r) => r.status === BindStatus.OK).length, 1)
      t.equal(all.filter((r) => r.status === BindStatus.REPLAYED).length, 49)
      t.equal(passesOf(await bindFor(f)), 2, 'one pass from the fifty, and this one')
    })

    t.test('a bind once-key is fresh again after its ttl', { skip: clockSkip }, async (t) => {
      const f = fp()
      const once = { id: randomBytes(32).toString('hex'), ttlMs: 200 }
      t.equal((await bindFor(f, GRANT, once)).status, BindStatus.OK)
      t.equal((await bindFor(f, GRANT, once)).status, BindStatus.REPLAYED)
      await sleep(300)
      t.equal((await bindFor(f, GRANT, once)).status, BindStatus.OK)
    })

    t.test('no grant before a pass: NO_GRANT (and the upstream token is taken all the same)', async (t) => {
      const f = fp()
      const r = await store.authorize({ fingerprint: f, rate: { burst: 5, perSecond: 0.001 } })
      t.equal(r.status, AuthorizeStatus.NO_GRANT)
      t.equal(r.rate.remaining, 4)
    })

    t.test('a pass grants until now + ttl, unlimited by default; authorize reports it', async (t) => {
      const f = fp()
      const before = Date.now()
      const b = await passFor(f)
      t.equal(b.grant.requests, null)
      t.ok(Math.abs(b.grant.expiresAt - (before + GRANT.ttlMs)) < 2000, 'expiry is now + ttl on the store clock')
      for (let i = 0; i < 5; i++) {
        const a = await store.authorize({ fingerprint: f, rate: LOOSE })
        t.equal(a.status, AuthorizeStatus.OK)
        if (a.status === AuthorizeStatus.OK) t.same(a.grant, b.grant)
      }
    })

    t.test('a request budget: exactly N allowed, then NO_GRANT; a new pass refills it', async (t) => {
      const f = fp()
      const grant = { ttlMs: 60_000, maxRequests: 3 }
      t.equal((await passFor(f, grant)).grant.requests, 3)
      const seen: number[] = []
      for (let i = 0; i < 3; i++) {
        const a = await store.authorize({ fingerprint: f, rate: LOOSE })
        t.equal(a.status, AuthorizeStatus.OK)
        if (a.status === AuthorizeStatus.OK) seen.push(a.grant.requests ?? -1)
      }
      t.same(seen, [2, 1, 0])
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.NO_GRANT)
      t.equal((await passFor(f, grant)).grant.requests, 3, 'refilled')
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.OK)
    })

    t.test('a concurrent burst against a budget of 10 allows exactly 10', async (t) => {
      const f = fp()
      await passFor(f, { ttlMs: 60_000, maxRequests: 10 })
      const all = await Promise.all(Array.from({ length: 40 }, async () => await store.authorize({ fingerprint: f, rate: LOOSE })))
      t.equal(all.filter((r) => r.status === AuthorizeStatus.OK).length, 10)
      t.equal(all.filter((r) => r.status === AuthorizeStatus.NO_GRANT).length, 30)
    })

    t.test('a grant expires; a new pass keeps the later expiry', { skip: clockSkip }, async (t) => {
      const f = fp()
      const short = await passFor(f, { ttlMs: 300, maxRequests: 0 })
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.OK)
      const long = await passFor(f, { ttlMs: 60_000, maxRequests: 0 })
      t.ok(long.grant.expiresAt > short.grant.expiresAt + 50_000)
      const again = await passFor(f, { ttlMs: 300, maxRequests: 0 })
      t.equal(again.grant.expiresAt, long.grant.expiresAt, 'a shorter ttl does not cut a longer grant')
      const g = fp()
      await passFor(g, { ttlMs: 300, maxRequests: 0 })
      await sleep(450)
      t.equal((await store.authorize({ fingerprint: g, rate: LOOSE })).status, AuthorizeStatus.NO_GRANT, 'expired')
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE })).status, AuthorizeStatus.OK, 'the longer one lives')
    })

    t.test('a grant belongs to its identity only', async (t) => {
      const f = fp()
      await passFor(f)
      t.equal((await store.authorize({ fingerprint: fp(), rate: LOOSE })).status, AuthorizeStatus.NO_GRANT)
    })

    t.test('the upstream bucket: burst then RATE_LIMITED, separate from the challenge bucket', async (t) => {
      const f = fp()
      await passFor(f)
      const rate = { burst: 3, perSecond: 0.001 }
      const all = []
      for (let i = 0; i < 5; i++) all.push(await store.authorize({ fingerprint: f, rate }))
      t.same(all.map((r) => r.status), [0, 0, 0, AuthorizeStatus.RATE_LIMITED, AuthorizeStatus.RATE_LIMITED])
      t.ok(all[3]!.rate.retryAfterMs > 0)
      t.equal((await store.take({ fingerprint: f, rate })).status, TakeStatus.OK, 'the challenge bucket is untouched')
    })

    t.test('a once-key is REPLAYED on authorize and allows nothing', async (t) => {
      const f = fp()
      await passFor(f, { ttlMs: 60_000, maxRequests: 5 })
      const once = { id: randomBytes(16).toString('hex'), ttlMs: 60_000 }
      const a = await store.authorize({ fingerprint: f, rate: LOOSE, once })
      t.equal(a.status, AuthorizeStatus.OK)
      t.equal((await store.authorize({ fingerprint: f, rate: LOOSE, once })).status, AuthorizeStatus.REPLAYED)
      const b = await store.authorize({ fingerprint: f, rate: LOOSE })
      t.equal(b.status === AuthorizeStatus.OK ? b.grant.requests : -1, 3, 'the replay counted nothing')
    })

    t.test('the token bucket: burst, then RATE_LIMITED with a retry time, then refill', async (t) => {
      const f = fp()
      // A clock that is not a wall clock (ioredis-mock's TIME jumps by up to a second between
      // calls) would refill a 10/s bucket between the takes; there the bucket refills slowly
      // enough that no jump refills a token, and the same checks hold.
      const rate = caps.wallClock ? { burst: 3, perSecond: 10 } : { burst: 3, perSecond: 0.01 }
      const tokenMs = 1000 / rate.perSecond
      const seen: TakeStatus[] = []
      for (let i = 0; i < 4; i++) seen.push((await store.take({ fingerprint: f, rate })).status)
      t.same(seen, [TakeStatus.OK, TakeStatus.OK, TakeStatus.OK, TakeStatus.RATE_LIMITED])
      const limited = await store.take({ fingerprint: f, rate })
      t.equal(limited.rate.remaining, 0)
      t.ok(limited.rate.retryAfterMs > 0 && limited.rate.retryAfterMs <= tokenMs, `retry after ${limited.rate.retryAfterMs} ms (at most ${tokenMs})`)
      t.ok(limited.rate.resetMs > 0 && limited.rate.resetMs <= rate.burst * tokenMs, `full again in ${limited.rate.resetMs} ms (at most ${rate.burst * tokenMs})`)
      t.equal((await store.take({ fingerprint: fp(), rate })).status, TakeStatus.OK, 'another identity has its own bucket')
    })

    t.test('an empty bucket refills at its rate', { skip: clockSkip }, async (t) => {
      const f = fp()
      const rate = { burst: 2, perSecond: 10 }
      await store.take({ fingerprint: f, rate })
      await store.take({ fingerprint: f, rate })
      const limited = await store.take({ fingerprint: f, rate })
      t.equal(limited.status, TakeStatus.RATE_LIMITED)
      await sleep(limited.rate.retryAfterMs + 30)
      t.equal((await store.take({ fingerprint: f, rate })).status, TakeStatus.OK, 'refilled')
    })

    t.test('replays of a once-key take no token: the identity\'s next fresh request is admitted', async (t) => {
      // Whoever sends a captured signature again is not proven to be its identity: N replays must
      // not empty that identity's bucket (and with it, answer its next real request 429).
      const f = fp()
      const tight = { burst: 4, perSecond: 0.001 }
      const once = { id: randomBytes(16).toString('hex'), ttlMs: 60_000 }
      const issued = issueReq(f, { rate: tight })
      t.equal((await store.issue(issued)).status, IssueStatus.OK, 'a challenge to replay consume against: 3 tokens left')
      t.equal((await store.take({ fingerprint: f, rate: tight, once })).status, TakeStatus.OK, 'the key\'s first use: 2 left')
      const replays: Array<{ status: number, rate: { remaining: number, retryAfterMs: number } }> = []
      for (let i = 0; i < 10; i++) {
        replays.push(await store.issue(issueReq(f, { rate: tight, once })))
        replays.push(await store.consume({ fingerprint: f, nonce: issued.nonce, rate: tight, once }))
        replays.push(await store.take({ fingerprint: f, rate: tight, once }))
      }
      const expected = [IssueStatus.REPLAYED, ConsumeStatus.REPLAYED, TakeStatus.REPLAYED]
      t.same(replays.map((r) => r.status), replays.map((_, i) => expected[i % 3]), '30 replays through issue, consume and take: each REPLAYED')
      t.same(replays.map((r) => [r.rate.remaining, r.rate.retryAfterMs]), replays.map(() => [2, 0]), 'each answered with the bucket as it stands')
      const next = await store.issue(issueReq(f, { rate: tight, once: { id: randomBytes(16).toString('hex'), ttlMs: 60_000 } }))
      t.equal(next.status, IssueStatus.OK, 'the identity\'s next fresh request is admitted: the replays took none of its tokens')
      t.equal(next.rate.remaining, 1)
      const claim = await store.consume({ fingerprint: f, nonce: issued.nonce, rate: tight })
      t.equal(claim.status, ConsumeStatus.OK, 'the replayed consumes claimed nothing, and the last token is there for the claim')
      t.equal(claim.rate.remaining, 0)

      const u = fp()
      await passFor(u)
      const upstream = { burst: 2, perSecond: 0.001 }
      const used = { id: randomBytes(16).toString('hex'), ttlMs: 60_000 }
      t.equal((await store.authorize({ fingerprint: u, rate: upstream, once: used })).status, AuthorizeStatus.OK, 'upstream bucket: one token of two')
      for (let i = 0; i < 30; i++) {
        const r = await store.authorize({ fingerprint: u, rate: upstream, once: used })
        if (r.status !== AuthorizeStatus.REPLAYED || r.rate.remaining !== 1) { t.fail(`replay ${i}: ${JSON.stringify(r)}`); break }
      }
      const fresh = await store.authorize({ fingerprint: u, rate: upstream, once: { id: randomBytes(16).toString('hex'), ttlMs: 60_000 } })
      t.equal(fresh.status, AuthorizeStatus.OK, 'after 30 replays the next fresh protected request is allowed')
      t.equal(fresh.rate.remaining, 0)
    })

    t.test('a once-key refused with 429 is not recorded: sent again it is 429 again, not a replay', async (t) => {
      const f = fp()
      const tight = { burst: 1, perSecond: 0.001 }
      t.equal((await store.take({ fingerprint: f, rate: tight })).status, TakeStatus.OK, 'the one token')
      const keys = Array.from({ length: 4 }, () => ({ id: randomBytes(16).toString('hex'), ttlMs: 60_000 }))
      const u = fp()
      t.equal((await store.authorize({ fingerprint: u, rate: tight })).status, AuthorizeStatus.NO_GRANT, 'the one upstream token')
      const nonce = randomBytes(16).toString('base64url')
      for (let round = 0; round < 2; round++) {
        t.equal((await store.issue({ ...issueReq(f, { rate: tight }), once: keys[0] })).status, IssueStatus.RATE_LIMITED, `round ${round}: issue`)
        t.equal((await store.consume({ fingerprint: f, nonce, rate: tight, once: keys[1] })).status, ConsumeStatus.RATE_LIMITED, `round ${round}: consume`)
        t.equal((await store.take({ fingerprint: f, rate: tight, once: keys[2] })).status, TakeStatus.RATE_LIMITED, `round ${round}: take`)
        t.equal((await store.authorize({ fingerprint: u, rate: tight, once: keys[3] })).status, AuthorizeStatus.RATE_LIMITED, `round ${round}: authorize`)
      }
    })

    t.test('a once-key refused with 429 is admitted once a token is back, and is then a replay', { skip: clockSkip }, async (t) => {
      const rate = { burst: 1, perSecond: 10 }
      const ops: Array<[string, (f: string, once: OnceKey) => Promise<{ status: number, rate: { retryAfterMs: number } }>, number, number, number]> = [
        ['issue', async (f, once) => await store.issue({ ...issueReq(f, { rate }), once }), IssueStatus.RATE_LIMITED, IssueStatus.OK, IssueStatus.REPLAYED],
        ['consume', async (f, once) => await store.consume({ fingerprint: f, nonce: randomBytes(16).toString('base64url'), rate, once }), ConsumeStatus.RATE_LIMITED, ConsumeStatus.UNKNOWN, ConsumeStatus.REPLAYED],
        ['take', async (f, once) => await store.take({ fingerprint: f, rate, once }), TakeStatus.RATE_LIMITED, TakeStatus.OK, TakeStatus.REPLAYED],
        ['authorize', async (f, once) => await store.authorize({ fingerprint: f, rate, once }), AuthorizeStatus.RATE_LIMITED, AuthorizeStatus.NO_GRANT, AuthorizeStatus.REPLAYED],
      ]
      for (const [op, call, limited, admitted, replayed] of ops) {
        const f = fp()
        const once = { id: randomBytes(16).toString('hex'), ttlMs: 60_000 }
        t.not((await call(f, { id: randomBytes(16).toString('hex'), ttlMs: 60_000 })).status, limited, `${op}: the one token`)
        const refused = await call(f, once)
        t.equal(refused.status, limited, `${op}: 429`)
        await sleep(refused.rate.retryAfterMs + 30)
        t.equal((await call(f, once)).status, admitted, `${op}: the same key, a token back: admitted`)
        t.equal((await call(f, once)).status, replayed, `${op}: and now spent`)
      }
    })

    t.test('issue and consume take from the same bucket and refuse when it is empty', { skip: clockSkip }, async (t) => {
      const f = fp()
      const rate = { burst: 2, perSecond: 10 }
      const req = issueReq(f, { rate })
      t.equal((await store.issue(req)).status, IssueStatus.OK)
      t.equal((await store.take({ fingerprint: f, rate })).status, TakeStatus.OK)
      const again = issueReq(f, { rate })
      t.equal((await store.issue(again)).status, IssueStatus.RATE_LIMITED)
      t.equal((await store.consume({ fingerprint: f, nonce: req.nonce, rate })).status, ConsumeStatus.RATE_LIMITED)
      await sleep(150)
      t.equal((await store.consume({ fingerprint: f, nonce: again.nonce, rate })).status, ConsumeStatus.UNKNOWN, 'a refused issue created nothing')
      await sleep(150)
      t.equal((await store.consume({ fingerprint: f, nonce: req.nonce, rate })).status, ConsumeStatus.OK, 'a refused consume claimed nothing')
    })

    t.test('a once-key is REPLAYED within its window on every operation', async (t) => {
      const f = fp()
      const once = { id: randomBytes(16).toString('hex'), ttlMs: 60_000 }
      const req = issueReq(f, { once })
      t.equal((await store.issue(req)).status, IssueStatus.OK)
      t.equal((await store.issue(issueReq(f, { once }))).status, IssueStatus.REPLAYED)
      t.equal((await store.consume({ fingerprint: f, nonce: req.nonce, rate: LOOSE, once })).status, ConsumeStatus.REPLAYED)
      t.equal((await store.take({ fingerprint: f, rate: LOOSE, once })).status, TakeStatus.REPLAYED)
      t.equal((await store.consume({ fingerprint: f, nonce: req.nonce, rate: LOOSE })).status, ConsumeStatus.OK, 'the replay did not claim')
    })

    t.test('concurrent claims of one nonce: exactly one OK', async (t) => {
      const req = issueReq(fp())
      await store.issue(req)
      const all = await Promise.all(Array.from({ length: 100 }, async () => await store.consume({ fingerprint: req.fingerprint, nonce: req.nonce, rate: LOOSE })))
      t.equal(all.filter((r) => r.status === ConsumeStatus.OK).length, 1)
      t.equal(all.filter((r) => r.status === ConsumeStatus.CONSUMED).length, 99)
    })

    t.test('concurrent takes admit exactly the burst', async (t) => {
      const f = fp()
      const rate = { burst: 25, perSecond: 0.001 }
      const all = await Promise.all(Array.from({ length: 60 }, async () => await store.take({ fingerprint: f, rate })))
      t.equal(all.filter((r) => r.status === TakeStatus.OK).length, 25)
    })

    t.test('ping resolves on a reachable store', async (t) => {
      await t.resolves(store.ping())
    })
  })
}
