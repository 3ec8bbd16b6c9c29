/**
 * The in-memory Store: the embedded default for a single gate process. Every operation is
 * synchronous inside one event-loop turn, hence atomic. Challenges expire at deadline + grace;
 * consumed records stay as tombstones until then (so a replay gets 409, not 404). The number of
 * live records is bounded: when full, issue answers FULL (the gate replies 503) and never evicts
 * a live challenge.
 *
 * Records live in generations: one per slice of issue time (a sixteenth of a record's lifetime,
 * at least a second), newest last, dropped whole once their last record expires. A lookup asks
 * at most about seventeen generations, newest first.
 *
 * A generation keeps its records in columns of typed arrays, keyed by the nonce's 16 bytes in an
 * open-addressing table: no JavaScript object per record, so the garbage collector has nothing
 * to copy, promote or mark for them. With a Map of one record object per nonce, a gate holding
 * its steady state of records (70 s of challenges at the defaults: millions at tens of thousands
 * a second) spent more on issuing them than on everything else it does for a GET /challenge
 * (docs/benchmarks.md, session 7). Nonces are therefore 16 bytes in canonical base64url and seeds
 * 32 bytes in hex (given back in lower case), as the gate makes them (PROTOCOL.md section 2); issue
 * refuses others with a TypeError, and a lookup of a nonce in any other form finds nothing.
 */
import type {
  BindRequest, BindResult, BucketSpec, ChallengeRecord, ConsumeRequest, ConsumeResult, IssueRequest,
  IssueResult, OnceKey, RateState, Store, TakeRequest, TakeResult,
} from './store.js'
import { ConsumeStatus, IssueStatus, TakeStatus, takeToken } from './store.js'
import type { RandomPool } from '../random.js'

interface Bucket { tokens: number, last: number, idleAt: number }

const CONSUMED = 1
const PASSED = 2
/** Per record in Generation.numbers: issuedAt, deadline, expiresAt, iterations, checkpointInterval. */
const NUMBERS = 5

/** base64url digit values by character code (-1: not a digit). */
const B64 = new Int8Array(128).fill(-1)
for (const [i, c] of [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'].entries()) B64[c.charCodeAt(0)] = i

function b64 (s: string, i: number): number {
  const c = s.charCodeAt(i)
  return c < 128 ? B64[c]! : -1
}

/** The nonce being looked up or inserted, as bytes and as four 32-bit words (one buffer). */
const KEY = new Uint8Array(16)
const KEY32 = new Int32Array(KEY.buffer)

/** The seed being inserted, as bytes and as eight 32-bit words (one buffer). */
const SEED = Buffer.alloc(32)
const SEED32 = new Int32Array(SEED.buffer, SEED.byteOffset, 8)

/**
 * Put a seed's bytes into SEED: true for 64 hex digits, false for anything else. The seed the
 * gate has just drawn is copied from its pool; any other is decoded by Buffer#write, which stops
 * at the first character that is not a hex digit.
 */
function seedBytes (s: string, random: RandomPool | undefined): boolean {
  if (s.length !== 64) return false
  return random?.hexWords(s, SEED32) === true || SEED.write(s, 0, 32, 'hex') === 32
}

/**
 * Decode a nonce into KEY: true for 22 base64url characters in canonical form (the last one's
 * four unused bits zero, as a 16-byte encoding has them), false for anything else.
 */
function nonceKey (s: string, random?: RandomPool): boolean {
  if (s.length !== 22) return false
  if (random?.nonceWords(s, KEY32) === true) return true
  let j = 0
  for (let i = 0; i < 20; i += 4) {
    const a = b64(s, i)
    const b = b64(s, i + 1)
    const c = b64(s, i + 2)
    const d = b64(s, i + 3)
    if ((a | b | c | d) < 0) return false
    const n = (a << 18) | (b << 12) | (c << 6) | d
    KEY[j++] = n >> 16
    KEY[j++] = n >> 8
    KEY[j++] = n
  }
  const a = b64(s, 20)
  const b = b64(s, 21)
  if ((a | b) < 0 || (b & 15) !== 0) return false
  KEY[15] = (a << 2) | (b >> 4)
  return true
}

/**
 * The records issued in one slice of time, in columns indexed by slot (issue order), and a table
 * from nonce to slot + 1 (0: empty), open addressing with linear probing, at most half full; each
 * place holds the slot and the nonce's first word side by side, so that a probe reads one cache
 * line per place and a record only for a nonce whose first word matches. The nonces are CSPRNG
 * bytes, so their first word is the hash; a lookup's nonce may be anyone's choice, but the
 * table's layout is not, and a probe ends at the first empty place.
 */
class Generation {
  readonly start: number
  readonly span: number
  maxExpiry = 0
  count = 0
  #table: Int32Array
  #keys: Int32Array
  #numbers: Float64Array
  #seeds: Int32Array
  #flags: Uint8Array
  readonly #fingerprints: string[] = []

  /**
   * Room for `capacity` records (a power of two), or in the columns of `reuse` (a dropped
   * generation with at least that room): no allocation, and memory already paged in.
   */
  constructor (start: number, span: number, capacity: number, reuse?: Generation) {
    this.start = start
    this.span = span
    if (reuse !== undefined) {
      this.#table = reuse.#table.fill(0)
      this.#keys = reuse.#keys
      this.#numbers = reuse.#numbers
      this.#seeds = reuse.#seeds
      this.#flags = reuse.#flags.fill(0)
      return
    }
    this.#table = new Int32Array(4 * capacity)
    this.#keys = new Int32Array(4 * capacity)
    this.#numbers = new Float64Array(NUMBERS * capacity)
    this.#seeds = new Int32Array(8 * capacity)
    this.#flags = new Uint8Array(capacity)
  }

  get capacity (): number { return this.#flags.length }

  /** The slot of the nonce in KEY, or -1. */
  find (): number {
    const i = this.#probe()
    return i < 0 ? -1 : this.#table[2 * i]! - 1
  }

  /**
   * Add the record of the nonce in KEY and the seed in SEED, in one probe of the table: false,
   * and nothing written, when the nonce is already there.
   */
  add (fingerprint: string, iterations: number, checkpointInterval: number, issuedAt: number, deadline: number, expiresAt: number): boolean {
    const slot = this.count
    if (slot === this.#flags.length) this.#grow()
    const place = this.#probe()
    if (place >= 0) return false
    const at = 2 * (-place - 1)
    this.#table[at] = slot + 1
    this.#table[at + 1] = KEY32[0]!
    const keys = this.#keys
    keys[4 * slot] = KEY32[0]!
    keys[4 * slot + 1] = KEY32[1]!
    keys[4 * slot + 2] = KEY32[2]!
    keys[4 * slot + 3] = KEY32[3]!
    const seeds = this.#seeds
    for (let i = 0; i < 8; i++) seeds[8 * slot + i] = SEED32[i]!
    const n = this.#numbers
    n[NUMBERS * slot] = issuedAt
    n[NUMBERS * slot + 1] = deadline
    n[NUMBERS * slot + 2] = expiresAt
    n[NUMBERS * slot + 3] = iterations
    n[NUMBERS * slot + 4] = checkpointInterval
    this.#fingerprints.push(fingerprint)
    this.count = slot + 1
    if (expiresAt > this.maxExpiry) this.maxExpiry = expiresAt
    return true
  }

  fingerprint (slot: number): string { return this.#fingerprints[slot]! }
  deadline (slot: number): number { return this.#numbers[NUMBERS * slot + 1]! }
  expiresAt (slot: number): number { return this.#numbers[NUMBERS * slot + 2]! }
  has (slot: number, flag: number): boolean { return (this.#flags[slot]! & flag) !== 0 }
  mark (slot: number, flag: number): void { this.#flags[slot]! |= flag }

  /** The record as callers see it (a copy: nothing they do changes the store). */
  record (slot: number, nonce: string): ChallengeRecord {
    const n = this.#numbers
    const at = NUMBERS * slot
    return {
      nonce,
      seed: Buffer.from(this.#seeds.buffer, this.#seeds.byteOffset + 32 * slot, 32).toString('hex'),
      fingerprint: this.#fingerprints[slot]!,
      iterations: n[at + 3]!,
      checkpointInterval: n[at + 4]!,
      issuedAt: n[at]!,
      deadline: n[at + 1]!,
    }
  }

  /**
   * Where the nonce in KEY is in the table (>= 0), or -(the empty place where it would go) - 1.
   * The table is never more than half full, so a probe ends.
   */
  #probe (): number {
    return this.#probeFor(KEY32[0]!, KEY32[1]!, KEY32[2]!, KEY32[3]!)
  }

  #probeFor (k0: number, k1: number, k2: number, k3: number): number {
    const table = this.#table
    const keys = this.#keys
    const mask = (table.length >> 1) - 1
    for (let i = k0 & mask; ; i = (i + 1) & mask) {
      const s = table[2 * i]! - 1
      if (s < 0) return -i - 1
      // The first word beside the slot: a place of another nonce is passed over without reading
      // its record (a cache miss of its own, at a random address).
      if (table[2 * i + 1] !== k0) continue
      const at = 4 * s
      if (keys[at + 1] === k1 && keys[at + 2] === k2 && keys[at + 3] === k3) return i
    }
  }

  /** Double every column and the table (then rebuilt: a slot's place depends on the table's size). */
  #grow (): void {
    const capacity = 2 * this.#flags.length
    const widen = <T extends Int32Array | Float64Array | Uint8Array>(a: T, make: (n: number) => T, per: number): T => {
      const b = make(per * capacity)
      b.set(a)
      return b
    }
    this.#keys = widen(this.#keys, (n) => new Int32Array(n), 4)
    this.#numbers = widen(this.#numbers, (n) => new Float64Array(n), NUMBERS)
    this.#seeds = widen(this.#seeds, (n) => new Int32Array(n), 8)
    this.#flags = widen(this.#flags, (n) => new Uint8Array(n), 1)
    this.#table = new Int32Array(4 * capacity)
    const keys = this.#keys
    for (let s = 0; s < this.count; s++) {
      const place = -this.#probeFor(keys[4 * s]!, keys[4 * s + 1]!, keys[4 * s + 2]!, keys[4 * s + 3]!) - 1
      this.#table[2 * place] = s + 1
      this.#table[2 * place + 1] = keys[4 * s]!
    }
  }
}

export interface MemoryStoreOptions {
  /** Upper bound on live challenge records (including consumed tombstones). */
  maxChallenges: number
  /** Clock, epoch ms. Tests pass a fake one. */
  now?: () => number
  /** Sweep period for expired records and idle buckets (ms); 0 disables the timer. */
  sweepIntervalMs?: number
  /**
   * The pool the caller draws nonces and seeds from: the bytes of the ones it has just drawn are
   * copied from it instead of decoded (the gate's GET /challenge). Any other nonce or seed is decoded.
   */
  random?: RandomPool
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
  /** The slot #live found. */
  #slot = -1
  readonly #random: RandomPool | undefined
  /** The largest dropped generation, whose columns the next new one may take over. */
  #spare: Generation | undefined

  constructor (opts: MemoryStoreOptions) {
    this.#max = opts.maxChallenges
    this.#now = opts.now ?? Date.now
    this.#random = opts.random
    const every = opts.sweepIntervalMs ?? 1000
    if (every > 0) {
      this.#timer = setInterval(() => this.sweep(), every)
      this.#timer.unref()
    }
  }

  /** Live records, consumed tombstones included. */
  get size (): number { return this.#size }

  issue (req: IssueRequest): IssueResult {
    if (!nonceKey(req.nonce, this.#random)) throw new TypeError('the memory store takes 16-byte nonces in canonical base64url')
    if (!seedBytes(req.seed, this.#random)) throw new TypeError('the memory store takes 32-byte seeds in hex')
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
    // hit first, and never lets a record be overwritten. (An older record under the same nonce
    // would only be shadowed: lookups go newest first, and each record is still claimed at most once.)
    if (!g.add(req.fingerprint, req.iterations, req.checkpointInterval, now, deadline, expiresAt)) throw new Error('nonce collision')
    this.#size++
    return {
      status: IssueStatus.OK,
      rate,
      challenge: { nonce: req.nonce, seed: req.seed, fingerprint: req.fingerprint, iterations: req.iterations, checkpointInterval: req.checkpointInterval, issuedAt: now, deadline },
    }
  }

  async consume (req: ConsumeRequest): Promise<ConsumeResult> {
    const { now, rate, replay, admitted } = this.#admit(req)
    if (replay) return { status: ConsumeStatus.REPLAYED, rate }
    if (!admitted) return { status: ConsumeStatus.RATE_LIMITED, rate }
    const g = this.#live(req.nonce, now)
    const slot = this.#slot
    // A nonce issued to another identity is unknown to this one, and left untouched.
    if (g === undefined || g.fingerprint(slot) !== req.fingerprint) return { status: ConsumeStatus.UNKNOWN, rate }
    if (g.has(slot, CONSUMED)) return { status: ConsumeStatus.CONSUMED, rate }
    g.mark(slot, CONSUMED)
    const status = now > g.deadline(slot) ? ConsumeStatus.EXPIRED : ConsumeStatus.OK
    return { status, rate, challenge: g.record(slot, req.nonce), now }
  }

  async bind (req: BindRequest): Promise<BindResult> {
    this.#check()
    const now = this.#now()
    const g = this.#live(req.nonce, now)
    const slot = this.#slot
    let expiresAt = now
    if (g !== undefined && g.fingerprint(slot) === req.fingerprint) {
      g.mark(slot, PASSED)
      expiresAt = g.expiresAt(slot)
    }
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
      if (g.maxExpiry > now) {
        kept.push(g)
        continue
      }
      this.#size -= g.count
      if (g.capacity > (this.#spare?.capacity ?? 0)) this.#spare = g
    }
    this.#gens = kept
    for (const [k, b] of this.#buckets) if (b.idleAt <= now) this.#buckets.delete(k)
    for (const [k, exp] of this.#once) if (exp <= now) this.#once.delete(k)
    for (const [k, p] of this.#passes) if (p.expiresAt <= now) this.#passes.delete(k)
  }

  /** Inspect a record (tests and diagnostics only). */
  peek (nonce: string): { consumed: boolean, passed: boolean } | undefined {
    const g = this.#live(nonce, this.#now())
    return g === undefined ? undefined : { consumed: g.has(this.#slot, CONSUMED), passed: g.has(this.#slot, PASSED) }
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
    // As much room as the generation before needed: its successor, issued at the same rate, then
    // grows no more (each doubling copies every column and rebuilds the table).
    let capacity = 1024
    while (last !== undefined && capacity < last.count) capacity *= 2
    const reuse = this.#spare !== undefined && this.#spare.capacity >= capacity ? this.#spare : undefined
    if (reuse !== undefined) this.#spare = undefined
    const g = new Generation(now, Math.max(1000, Math.ceil(lifetimeMs / 16)), capacity, reuse)
    this.#gens.push(g)
    return g
  }

  /**
   * The generation holding the record of `nonce`, newest first, its slot left in #slot; undefined
   * when there is none or it has expired (an expired record stays in its generation, counted in
   * the size, until the whole generation is dropped).
   */
  #live (nonce: string, now: number): Generation | undefined {
    if (!nonceKey(nonce)) return undefined
    for (let i = this.#gens.length - 1; i >= 0; i--) {
      const g = this.#gens[i]!
      const slot = g.find()
      if (slot < 0) continue
      if (g.expiresAt(slot) <= now) return undefined
      this.#slot = slot
      return g
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
