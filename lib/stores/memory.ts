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
 * open-addressing table: no JavaScript object per record, so a gate holding millions of live
 * records gives the garbage collector nothing to copy, promote or mark for them
 * (docs/decisions/memory-store-columns.md). Nonces are therefore 16 bytes in canonical base64url
 * and seeds 32 bytes in hex (given back in lower case), as the gate makes them (docs/protocol.md
 * section 2); issue refuses others with a TypeError, and a lookup of a nonce in any other form
 * finds nothing.
 */
import type {
  AuthorizeRequest, AuthorizeResult, BindRequest, BindResult, BucketSpec, ChallengeRecord, ConsumeRequest, ConsumeResult, IssueRequest,
  IssueResult, OnceKey, RateState, Store, StoreHealth, StoreOp, TakeRequest, TakeResult,
} from './store.js'
import { AuthorizeStatus, BindStatus, ConsumeStatus, IssueStatus, StoreOpError, TakeStatus, bucketState, takeToken } from './store.js'
import { ExpiringKeys } from './expiring-keys.js'

interface Bucket { tokens: number, last: number, idleAt: number }

/** The upstream bucket's key: the fingerprint with this prefix (the challenge bucket's is the bare fingerprint). */
const UPSTREAM = 'u:'
const CONSUMED = 1
const PASSED = 2
/** Per record in Generation.numbers: issuedAt, deadline, expiresAt, iterations, checkpointInterval. */
const NUMBERS = 5

/** Digit values by character code, -1 for a character that is not a digit. */
function digits (alphabet: string): Int8Array {
  const t = new Int8Array(128).fill(-1)
  for (let i = 0; i < alphabet.length; i++) t[alphabet.charCodeAt(i)] = i
  return t
}
const B64 = digits('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')

function digit (table: Int8Array, s: string, i: number): number {
  const c = s.charCodeAt(i)
  return c < 128 ? table[c]! : -1
}

/** Four base64url characters as 24 bits; negative when one is not a digit. */
function quad (s: string, i: number): number {
  return (digit(B64, s, i) << 18) | (digit(B64, s, i + 1) << 12) | (digit(B64, s, i + 2) << 6) | digit(B64, s, i + 3)
}

/**
 * Decode a nonce into `key`, its 16 bytes as four little-endian 32-bit words: true for 22
 * base64url characters in canonical form (the last one's four unused bits zero, as a 16-byte
 * encoding has them), false (`key` untouched) for anything else.
 */
function decodeNonce (s: string, key: Int32Array): boolean {
  if (s.length !== 22) return false
  // Five groups of three bytes, then the 16th byte from the last two characters.
  const g0 = quad(s, 0)
  const g1 = quad(s, 4)
  const g2 = quad(s, 8)
  const g3 = quad(s, 12)
  const g4 = quad(s, 16)
  const a = digit(B64, s, 20)
  const b = digit(B64, s, 21)
  if ((g0 | g1 | g2 | g3 | g4 | a | b) < 0 || (b & 15) !== 0) return false
  key[0] = (g0 >> 16) | (g0 & 0xff00) | ((g0 & 255) << 16) | ((g1 >> 16) << 24)
  key[1] = ((g1 >> 8) & 255) | ((g1 & 255) << 8) | ((g2 >> 16) << 16) | (((g2 >> 8) & 255) << 24)
  key[2] = (g2 & 255) | ((g3 >> 16) << 8) | (((g3 >> 8) & 255) << 16) | ((g3 & 255) << 24)
  key[3] = (g4 >> 16) | (g4 & 0xff00) | ((g4 & 255) << 16) | (((a << 2) | (b >> 4)) << 24)
  return true
}

/**
 * Decode a seed into `seed`, its 32 bytes as they are (node's hex decoder, which stops at the first
 * character that is not a hex digit): true for 64 hex digits (either case), false for anything else.
 */
function decodeSeed (s: string, seed: Int32Array): boolean {
  return s.length === 64 && bytesOf(seed, 0).write(s, 'hex') === 32
}

/** The 32 bytes at word `at` of `words` (a view, not a copy). */
function bytesOf (words: Int32Array, at: number): Buffer {
  return Buffer.from(words.buffer, words.byteOffset + 4 * at, 32)
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

  /** The slot of the nonce whose words are `key` (decodeNonce), or -1. */
  find (key: Int32Array): number {
    const i = this.#probe(key[0]!, key[1]!, key[2]!, key[3]!)
    return i < 0 ? -1 : this.#table[2 * i]! - 1
  }

  /**
   * Add the record of the nonce `key` and the seed `seed` (as decodeNonce and decodeSeed give
   * them), in one probe of the table: false, and nothing written, when the nonce is already there.
   */
  add (key: Int32Array, seed: Int32Array, fingerprint: string, iterations: number, checkpointInterval: number, issuedAt: number, deadline: number, expiresAt: number): boolean {
    const slot = this.count
    if (slot === this.#flags.length) this.#grow()
    const place = this.#probe(key[0]!, key[1]!, key[2]!, key[3]!)
    if (place >= 0) return false
    const at = 2 * (-place - 1)
    this.#table[at] = slot + 1
    this.#table[at + 1] = key[0]!
    const keys = this.#keys
    for (let i = 0; i < 4; i++) keys[4 * slot + i] = key[i]!
    const seeds = this.#seeds
    for (let i = 0; i < 8; i++) seeds[8 * slot + i] = seed[i]!
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
      seed: bytesOf(this.#seeds, 8 * slot).toString('hex'),
      fingerprint: this.#fingerprints[slot]!,
      iterations: n[at + 3]!,
      checkpointInterval: n[at + 4]!,
      issuedAt: n[at]!,
      deadline: n[at + 1]!,
    }
  }

  /**
   * Where the nonce of words k0..k3 is in the table (>= 0), or -(the empty place where it would
   * go) - 1. The table is never more than half full, so a probe ends.
   */
  #probe (k0: number, k1: number, k2: number, k3: number): number {
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
      const place = -this.#probe(keys[4 * s]!, keys[4 * s + 1]!, keys[4 * s + 2]!, keys[4 * s + 3]!) - 1
      this.#table[2 * place] = s + 1
      this.#table[2 * place + 1] = keys[4 * s]!
    }
  }
}

export interface MemoryStoreOptions {
  /** Upper bound on live challenge records (including consumed tombstones), and on live once-keys. */
  maxChallenges: number
  /** Clock, epoch ms. Tests pass a fake one. */
  now?: () => number
  /** Sweep period for expired records and idle buckets (ms); 0 disables the timer. */
  sweepIntervalMs?: number
}

/** Where a live record is: its generation and its slot there. */
interface Found { g: Generation, slot: number }

export class MemoryStore implements Store {
  readonly kind = 'memory'
  readonly #max: number
  readonly #now: () => number
  // Oldest first. Lookups check each record's own expiry, so generations are an optimisation,
  // never a correctness condition.
  #gens: Generation[] = []
  #size = 0
  readonly #buckets = new Map<string, Bucket>()
  readonly #once = new ExpiringKeys()
  readonly #passes = new Map<string, { count: number, expiresAt: number }>()
  /** Grants by fingerprint; requests -1: unlimited. */
  readonly #grants = new Map<string, { expiresAt: number, requests: number }>()
  #timer: NodeJS.Timeout | undefined
  #closed = false
  /** The largest dropped generation, whose columns the next new one may take over. */
  #spare: Generation | undefined
  // Decoded nonce and seed words, filled and read within one synchronous call that runs no code
  // from outside the store in between (the clock is read before), and passed on as arguments.
  readonly #key = new Int32Array(4)
  readonly #seed = new Int32Array(8)

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

  /** In the process: always ready, never replaced. */
  health (): StoreHealth { return { state: 'ready', downSince: undefined, replacements: undefined } }

  issue (req: IssueRequest): IssueResult {
    const now = this.#clock()
    const key = this.#key
    const seed = this.#seed
    if (!decodeNonce(req.nonce, key)) throw new TypeError('the memory store takes 16-byte nonces in canonical base64url')
    if (!decodeSeed(req.seed, seed)) throw new TypeError('the memory store takes 32-byte seeds in hex')
    // A full store answers before the once-key and the token: its 503 spends nothing, as a full
    // once-key map's does.
    if (this.#size >= this.#max) {
      this.#sweep(now)
      if (this.#size >= this.#max) return { status: IssueStatus.FULL, rate: this.#peek(req.fingerprint, req.rate, now) }
    }
    const { rate, replay, admitted } = this.#admit('issue', req.fingerprint, req, now)
    if (replay) return { status: IssueStatus.REPLAYED, rate }
    if (!admitted) return { status: IssueStatus.RATE_LIMITED, rate }
    const deadline = now + req.deadlineMs
    const expiresAt = deadline + req.graceMs
    const g = this.#generation(now, req.deadlineMs + req.graceMs)
    // 128-bit CSPRNG nonces never collide; this guards the generation a repeating generator would
    // hit first, and never lets a record be overwritten. (An older record under the same nonce
    // would only be shadowed: lookups go newest first, and each record is still claimed at most once.)
    if (!g.add(key, seed, req.fingerprint, req.iterations, req.checkpointInterval, now, deadline, expiresAt)) throw new Error('nonce collision')
    this.#size++
    return {
      status: IssueStatus.OK,
      rate,
      challenge: { nonce: req.nonce, seed: req.seed, fingerprint: req.fingerprint, iterations: req.iterations, checkpointInterval: req.checkpointInterval, issuedAt: now, deadline },
    }
  }

  async consume (req: ConsumeRequest): Promise<ConsumeResult> {
    const now = this.#clock()
    const { rate, replay, admitted } = this.#admit('consume', req.fingerprint, req, now)
    if (replay) return { status: ConsumeStatus.REPLAYED, rate }
    if (!admitted) return { status: ConsumeStatus.RATE_LIMITED, rate }
    const found = this.#live(req.nonce, now)
    // A nonce issued to another identity is unknown to this one, and left untouched.
    if (found === undefined || found.g.fingerprint(found.slot) !== req.fingerprint) return { status: ConsumeStatus.UNKNOWN, rate }
    const { g, slot } = found
    if (g.has(slot, CONSUMED)) return { status: ConsumeStatus.CONSUMED, rate }
    g.mark(slot, CONSUMED)
    const status = now > g.deadline(slot) ? ConsumeStatus.EXPIRED : ConsumeStatus.OK
    return { status, rate, challenge: g.record(slot, req.nonce), now }
  }

  async bind (req: BindRequest): Promise<BindResult> {
    const now = this.#clock()
    // A replayed attestation records nothing: no pass, no grant.
    if (this.#replayed(req.once, now)) return { status: BindStatus.REPLAYED }
    if (req.once !== undefined) this.#record('bind', req.once, now)
    const found = this.#live(req.nonce, now)
    let expiresAt = now
    if (found !== undefined && found.g.fingerprint(found.slot) === req.fingerprint) {
      found.g.mark(found.slot, PASSED)
      expiresAt = found.g.expiresAt(found.slot)
    }
    const p = this.#passes.get(req.fingerprint)
    const count = (p !== undefined && p.expiresAt > now ? p.count : 0) + 1
    this.#passes.set(req.fingerprint, { count, expiresAt: Math.max(expiresAt, p?.expiresAt ?? 0) })
    // The later of the current expiry and now + ttl; a pass refills the request budget.
    const g = this.#grants.get(req.fingerprint)
    const grant = {
      expiresAt: Math.max(now + req.grant.ttlMs, g !== undefined && g.expiresAt > now ? g.expiresAt : 0),
      requests: req.grant.maxRequests > 0 ? req.grant.maxRequests : -1,
    }
    this.#grants.set(req.fingerprint, grant)
    return { status: BindStatus.OK, passes: count, grant: { expiresAt: grant.expiresAt, requests: grant.requests < 0 ? null : grant.requests } }
  }

  async authorize (req: AuthorizeRequest): Promise<AuthorizeResult> {
    const now = this.#clock()
    const { rate, replay, admitted } = this.#admit('authorize', UPSTREAM + req.fingerprint, req, now)
    if (replay) return { status: AuthorizeStatus.REPLAYED, rate }
    if (!admitted) return { status: AuthorizeStatus.RATE_LIMITED, rate }
    const g = this.#grants.get(req.fingerprint)
    if (g === undefined || g.expiresAt <= now || g.requests === 0) return { status: AuthorizeStatus.NO_GRANT, rate }
    if (g.requests > 0) g.requests--
    return { status: AuthorizeStatus.OK, rate, grant: { expiresAt: g.expiresAt, requests: g.requests < 0 ? null : g.requests } }
  }

  async take (req: TakeRequest): Promise<TakeResult> {
    const { rate, replay, admitted } = this.#admit('take', req.fingerprint, req, this.#clock())
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
  sweep (): void { this.#sweep(this.#now()) }

  /** Inspect a record (tests and diagnostics only). */
  peek (nonce: string): { consumed: boolean, passed: boolean } | undefined {
    const found = this.#live(nonce, this.#now())
    return found === undefined ? undefined : { consumed: found.g.has(found.slot, CONSUMED), passed: found.g.has(found.slot, PASSED) }
  }

  #check (): void {
    if (this.#closed) throw new Error('store closed')
  }

  /** The store's time for an operation; throws once the store is closed. */
  #clock (): number {
    this.#check()
    return this.#now()
  }

  #sweep (now: number): void {
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
    this.#once.sweep(now)
    for (const [k, p] of this.#passes) if (p.expiresAt <= now) this.#passes.delete(k)
    for (const [k, g] of this.#grants) if (g.expiresAt <= now) this.#grants.delete(k)
  }

  /**
   * The step every operation with a bucket starts with (store.ts, OnceKey): a once-key already seen
   * is a replay, answered with the bucket as it stands, no token taken and nothing written; then a
   * token from the bucket `key`; a refusal records no once-key. Only an admitted request records it
   * (a full once-key map then throws, before the token is taken: a 503 changes nothing).
   */
  #admit (op: StoreOp, key: string, req: { rate: BucketSpec, once?: OnceKey | undefined }, now: number): { rate: RateState, replay: boolean, admitted: boolean } {
    const { once, rate: spec } = req
    if (this.#replayed(once, now)) return { rate: this.#peek(key, spec, now), replay: true, admitted: false }
    const b = this.#buckets.get(key)
    const r = takeToken(b?.tokens ?? spec.burst, b?.last ?? now, now, spec)
    if (r.admitted && once !== undefined) this.#record(op, once, now)
    // When the bucket would be full again it is equivalent to no bucket at all: the sweep drops it
    // then. (Updated in place: no new object and no Map write per request.)
    if (b === undefined) {
      this.#buckets.set(key, { tokens: r.tokens, last: now, idleAt: now + r.rate.resetMs })
    } else {
      b.tokens = r.tokens
      b.last = now
      b.idleAt = now + r.rate.resetMs
    }
    return { rate: r.rate, replay: false, admitted: r.admitted }
  }

  /** The generation a new record issued now goes to (a new one when the newest is past its span). */
  #generation (now: number, lifetimeMs: number): Generation {
    const last = this.#gens[this.#gens.length - 1]
    if (last !== undefined && now >= last.start && now - last.start < last.span) return last
    // As much room as the generation before needed: its successor, issued at the same rate, then
    // grows no more (each doubling copies every column and rebuilds the table).
    const needed = last?.count ?? 0
    let capacity = 1024
    while (capacity < needed) capacity *= 2
    const reuse = this.#spare !== undefined && this.#spare.capacity >= capacity ? this.#spare : undefined
    if (reuse !== undefined) this.#spare = undefined
    const g = new Generation(now, Math.max(1000, Math.ceil(lifetimeMs / 16)), capacity, reuse)
    this.#gens.push(g)
    return g
  }

  /**
   * The live record of `nonce`, newest generation first; undefined when there is none or it has
   * expired (an expired record stays in its generation, counted in the size, until the whole
   * generation is dropped).
   */
  #live (nonce: string, now: number): Found | undefined {
    const key = this.#key
    if (!decodeNonce(nonce, key)) return undefined
    for (let i = this.#gens.length - 1; i >= 0; i--) {
      const g = this.#gens[i]!
      const slot = g.find(key)
      if (slot < 0) continue
      return g.expiresAt(slot) <= now ? undefined : { g, slot }
    }
    return undefined
  }

  /** The bucket `key` as it stands at `now`, no token taken. */
  #peek (key: string, spec: BucketSpec, now: number): RateState {
    const b = this.#buckets.get(key)
    return bucketState(b?.tokens ?? spec.burst, b?.last ?? now, now, spec)
  }

  /** Whether `once` was seen and has not expired (reads only). */
  #replayed (once: OnceKey | undefined, now: number): boolean {
    if (once === undefined) return false
    const exp = this.#once.get(once.id)
    return exp !== undefined && exp > now
  }

  /** Record `once` (not seen, or expired) for its ttl; throws when the map is full. */
  #record (op: StoreOp, once: OnceKey, now: number): void {
    // Bounded like the records: an allowed agent sending at full speed cannot grow the map without
    // end; a full map fails closed (503) until keys expire (swept first: a key is swept at the end
    // of the second it expires in), and a replay is still told apart. Only admitted requests
    // record a key, so an identity's keys come at most at its rate.
    if (this.#once.get(once.id) === undefined && this.#once.size >= this.#max) {
      this.#once.sweep(now)
      if (this.#once.size >= this.#max) throw new StoreOpError(op, 'the memory store holds --max-challenges single-use keys')
    }
    this.#once.set(once.id, now + once.ttlMs)
  }
}
