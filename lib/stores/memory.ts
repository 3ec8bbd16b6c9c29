/**
 * The in-memory Store: the embedded default for a single gate process. Every operation is
 * synchronous inside one event-loop turn, hence atomic. Challenges expire at deadline + grace;
 * consumed records stay as tombstones until then (so a replay gets 409, not 404). The number of
 * live records is bounded: when full, issue answers FULL (the gate replies 503) and never evicts
 * a live challenge.
 *
 * Records live in generations: one Map per slice of issue time (a sixteenth of a record's
 * lifetime, at least a second), newest last. Inserting into a small recent Map and dropping a
 * whole expired Map costs a quarter of inserting into, and deleting one by one from, a single Map
 * of a few hundred thousand live records (the GET /challenge hot path). A lookup asks at most
 * about seventeen Maps, newest first.
 */
import type {
  BindRequest, BindResult, BucketSpec, ChallengeRecord, ConsumeRequest, ConsumeResult, IssueRequest,
  IssueResult, OnceKey, RateState, Store, TakeRequest, TakeResult,
} from './store.js'
import { ConsumeStatus, IssueStatus, TakeStatus, takeToken } from './store.js'

/** A stored record: the challenge's fields and the store's own, in one object (one per record to collect). */
interface Entry extends ChallengeRecord {
  expiresAt: number
  consumed: boolean
  passed: boolean
}

interface Bucket { tokens: number, last: number, idleAt: number }

/** The records issued in one slice of time; droppable as a whole once its last record expires. */
interface Generation {
  readonly map: Map<string, Entry>
  readonly start: number
  readonly span: number
  maxExpiry: number
}

export interface MemoryStoreOptions {
  /** Upper bound on live challenge records (including consumed tombstones). */
  maxChallenges: number
  /** Clock, epoch ms. Tests pass a fake one. */
  now?: () => number
  /** Sweep period for expired records and idle buckets (ms); 0 disables the timer. */
  sweepIntervalMs?: number
}

/**
 * What callers get: a copy of the challenge's fields, so nobody can change the stored record.
 * (Object.freeze instead cost 4,000 instructions per call in V8's runtime; this copy a few dozen.)
 */
function record (e: Entry): ChallengeRecord {
  return {
    nonce: e.nonce,
    seed: e.seed,
    fingerprint: e.fingerprint,
    iterations: e.iterations,
    checkpointInterval: e.checkpointInterval,
    issuedAt: e.issuedAt,
    deadline: e.deadline,
  }
}

export class MemoryStore implements Store {
  readonly kind = 'memory'
  readonly #max: number
  readonly #now: () => number
  // Oldest first. Lookups check each record's own expiry, so generations are an optimisation,
  // never a correctness condition.
  #gens: Generation[] = []
  #size = 0
  readonly #buckets = new Map<string, Bucket>()
  readonly #once = new Map<string, number>()
  readonly #passes = new Map<string, { count: number, expiresAt: number }>()
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor (opts: MemoryStoreOptions) {
    this.#max = opts.maxChallenges
    this.#now = opts.now ?? Date.now
    const every = opts.sweepIntervalMs ?? 1000
    if (every > 0) {
      this.#timer = setInterval(() => this.sweep(), every)
      this.#timer.unref()
    }
  }

  /** Live records, consumed tombstones included. */
  get size (): number { return this.#size }

  issue (req: IssueRequest): IssueResult {
    const { now, rate, replay, admitted } = this.#admit(req)
    if (replay) return { status: IssueStatus.REPLAYED, rate }
    if (!admitted) return { status: IssueStatus.RATE_LIMITED, rate }
    if (this.#size >= this.#max) {
      this.sweep()
      if (this.#size >= this.#max) return { status: IssueStatus.FULL, rate }
    }
    const deadline = now + req.deadlineMs
    const expiresAt = deadline + req.graceMs
    const g = this.#generation(now, req.deadlineMs + req.graceMs)
    // 128-bit CSPRNG nonces never collide; this guards the generation a repeating generator would
    // hit first, and never lets a record be overwritten. (Asking every generation cost 0.9 us per
    // request. An older record under the same nonce would only be shadowed: lookups go newest first,
    // and each record is still claimed at most once.)
    if (g.map.has(req.nonce)) throw new Error('nonce collision')
    const e: Entry = {
      nonce: req.nonce,
      seed: req.seed,
      fingerprint: req.fingerprint,
      iterations: req.iterations,
      checkpointInterval: req.checkpointInterval,
      issuedAt: now,
      deadline,
      expiresAt,
      consumed: false,
      passed: false,
    }
    g.map.set(req.nonce, e)
    if (expiresAt > g.maxExpiry) g.maxExpiry = expiresAt
    this.#size++
    return { status: IssueStatus.OK, rate, challenge: record(e) }
  }

  async consume (req: ConsumeRequest): Promise<ConsumeResult> {
    const { now, rate, replay, admitted } = this.#admit(req)
    if (replay) return { status: ConsumeStatus.REPLAYED, rate }
    if (!admitted) return { status: ConsumeStatus.RATE_LIMITED, rate }
    const e = this.#live(req.nonce, now)
    // A nonce issued to another identity is unknown to this one, and left untouched.
    if (e === undefined || e.fingerprint !== req.fingerprint) return { status: ConsumeStatus.UNKNOWN, rate }
    if (e.consumed) return { status: ConsumeStatus.CONSUMED, rate }
    e.consumed = true
    const status = now > e.deadline ? ConsumeStatus.EXPIRED : ConsumeStatus.OK
    return { status, rate, challenge: record(e), now }
  }

  async bind (req: BindRequest): Promise<BindResult> {
    this.#check()
    const now = this.#now()
    const e = this.#live(req.nonce, now)
    if (e !== undefined && e.fingerprint === req.fingerprint) e.passed = true
    const expiresAt = e?.expiresAt ?? now
    const p = this.#passes.get(req.fingerprint)
    const count = (p !== undefined && p.expiresAt > now ? p.count : 0) + 1
    this.#passes.set(req.fingerprint, { count, expiresAt: Math.max(expiresAt, p?.expiresAt ?? 0) })
    return { passes: count }
  }

  async take (req: TakeRequest): Promise<TakeResult> {
    const { rate, replay, admitted } = this.#admit(req)
    if (replay) return { status: TakeStatus.REPLAYED, rate }
    return { status: admitted ? TakeStatus.OK : TakeStatus.RATE_LIMITED, rate }
  }

  limited (fingerprint: string, spec: BucketSpec): RateState | undefined {
    if (this.#closed) return undefined // the store call that follows reports it
    const b = this.#buckets.get(fingerprint)
    if (b === undefined) return undefined // no bucket: a full one
    const r = takeToken(b.tokens, b.last, this.#now(), spec)
    return r.admitted ? undefined : r.rate
  }

  async ping (): Promise<void> { this.#check() }

  async close (): Promise<void> {
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
  }

  /** Drop expired records, idle (full) buckets and expired once-keys. */
  sweep (): void {
    const now = this.#now()
    const kept: Generation[] = []
    for (const g of this.#gens) {
      if (g.maxExpiry <= now) this.#size -= g.map.size
      else kept.push(g)
    }
    this.#gens = kept
    for (const [k, b] of this.#buckets) if (b.idleAt <= now) this.#buckets.delete(k)
    for (const [k, exp] of this.#once) if (exp <= now) this.#once.delete(k)
    for (const [k, p] of this.#passes) if (p.expiresAt <= now) this.#passes.delete(k)
  }

  /** Inspect a record (tests and diagnostics only). */
  peek (nonce: string): { consumed: boolean, passed: boolean } | undefined {
    const e = this.#live(nonce, this.#now())
    return e === undefined ? undefined : { consumed: e.consumed, passed: e.passed }
  }

  #check (): void {
    if (this.#closed) throw new Error('store closed')
  }

  /** The step every operation starts with: the once-key (marked seen), then a token. */
  #admit (req: { fingerprint: string, rate: BucketSpec, once?: OnceKey | undefined }): { now: number, rate: RateState, replay: boolean, admitted: boolean } {
    this.#check()
    const now = this.#now()
    const replay = this.#seen(req.once, now)
    const { rate, admitted } = this.#take(req.fingerprint, req.rate, now)
    return { now, rate, replay, admitted }
  }

  /** The generation a new record issued now goes to (a new one when the newest is past its span). */
  #generation (now: number, lifetimeMs: number): Generation {
    const last = this.#gens[this.#gens.length - 1]
    if (last !== undefined && now >= last.start && now - last.start < last.span) return last
    const g: Generation = { map: new Map(), start: now, span: Math.max(1000, Math.ceil(lifetimeMs / 16)), maxExpiry: 0 }
    this.#gens.push(g)
    return g
  }

  /** The record of `nonce` unless expired (an expired one is dropped), newest generation first. */
  #live (nonce: string, now: number): Entry | undefined {
    for (let i = this.#gens.length - 1; i >= 0; i--) {
      const g = this.#gens[i]!
      const e = g.map.get(nonce)
      if (e === undefined) continue
      if (e.expiresAt <= now) {
        g.map.delete(nonce)
        this.#size--
        return undefined
      }
      return e
    }
    return undefined
  }

  #seen (once: OnceKey | undefined, now: number): boolean {
    if (once === undefined) return false
    const exp = this.#once.get(once.id)
    if (exp !== undefined && exp > now) return true
    this.#once.set(once.id, now + once.ttlMs)
    return false
  }

  #take (key: string, spec: BucketSpec, now: number): { rate: RateState, admitted: boolean } {
    const b = this.#buckets.get(key)
    const r = takeToken(b?.tokens ?? spec.burst, b?.last ?? now, now, spec)
    // When the bucket would be full again it is equivalent to no bucket at all: drop it then.
    // (Updated in place: no new object and no Map write per request.)
    if (b === undefined) {
      this.#buckets.set(key, { tokens: r.tokens, last: now, idleAt: now + r.rate.resetMs })
    } else {
      b.tokens = r.tokens
      b.last = now
      b.idleAt = now + r.rate.resetMs
    }
    return { rate: r.rate, admitted: r.admitted }
  }
}
