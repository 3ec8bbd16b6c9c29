/**
 * The Store contract. Every handler makes one atomic store call per request (docs/architecture.md):
 * issue (rate-limit + create challenge), consume (rate-limit + claim nonce), bind (record a pass and
 * grant access), authorize (rate-limit + check and count a protected request against the grant),
 * take (a bare token bucket). Time comes from the store's clock so that several gate instances
 * agree. Implementations: memory.ts (embedded default), redis.ts (several instances).
 *
 * A store that cannot be reached throws StoreUnavailableError; the gate then fails closed (503).
 */
import { StoreUnavailableError } from '../errors.js'

/** Integer status codes (the Redis scripts return the same integers). */
export enum IssueStatus { OK = 0, RATE_LIMITED = 1, FULL = 2, REPLAYED = 3 }
export enum ConsumeStatus { OK = 0, RATE_LIMITED = 1, UNKNOWN = 2, CONSUMED = 3, EXPIRED = 4, REPLAYED = 5 }
export enum TakeStatus { OK = 0, RATE_LIMITED = 1, REPLAYED = 2 }
export enum AuthorizeStatus { OK = 0, RATE_LIMITED = 1, NO_GRANT = 2, REPLAYED = 3 }
export enum BindStatus { OK = 0, REPLAYED = 1 }

/** A token bucket: `burst` tokens, refilled at `perSecond`; each call takes one token. */
export interface BucketSpec {
  burst: number
  perSecond: number
}

/** The bucket after a take. */
export interface RateState {
  limit: number
  /** Whole tokens left after this request. */
  remaining: number
  /** Milliseconds until the bucket is full again. */
  resetMs: number
  /** Milliseconds until one token is available (0 when admitted). */
  retryAfterMs: number
}

/**
 * An optional single-use key checked in the same atomic step as the operation's token, in this
 * order: a key seen within `ttlMs` is REPLAYED, and the call takes no token and writes nothing (the
 * sender of a captured signature is not proven to be its identity, so a replay must not drain that
 * identity's bucket); then the token, where a refusal (RATE_LIMITED) does not record the key (a
 * flood of refused fresh keys holds no memory); only an admitted call records the key, for `ttlMs`,
 * and goes on. bind, which takes no token, records it unless it was seen. Forwarded mode uses the
 * request id of a signed header set (32 hex), Web Bot Auth a digest of the signature's keyid and
 * nonce (43 base64url), bind an attestation's `jti` (64 hex, docs/protocol.md section 4 step 7);
 * the lengths keep them apart.
 */
export interface OnceKey {
  id: string
  ttlMs: number
}

export interface ChallengeRecord {
  nonce: string
  seed: string
  fingerprint: string
  iterations: number
  checkpointInterval: number
  /** Store time, epoch ms. */
  issuedAt: number
  /** Store time, epoch ms. */
  deadline: number
}

export interface IssueRequest {
  fingerprint: string
  rate: BucketSpec
  /** 16 CSPRNG bytes, base64url without padding (22 characters; the memory store takes no other form). */
  nonce: string
  /** 32 CSPRNG bytes, lowercase hex (the memory store takes any hex and gives it back in lower case). */
  seed: string
  iterations: number
  checkpointInterval: number
  /** deadline = issuedAt + deadlineMs */
  deadlineMs: number
  /** the record lives until deadline + graceMs, then it is unknown */
  graceMs: number
  once?: OnceKey
}

export type IssueResult =
  | { status: IssueStatus.OK, rate: RateState, challenge: ChallengeRecord }
  | { status: IssueStatus.RATE_LIMITED | IssueStatus.FULL | IssueStatus.REPLAYED, rate: RateState }

export interface ConsumeRequest {
  fingerprint: string
  nonce: string
  rate: BucketSpec
  once?: OnceKey
}

export type ConsumeResult =
  | { status: ConsumeStatus.OK | ConsumeStatus.EXPIRED, rate: RateState, challenge: ChallengeRecord, now: number }
  | { status: ConsumeStatus.RATE_LIMITED | ConsumeStatus.UNKNOWN | ConsumeStatus.CONSUMED | ConsumeStatus.REPLAYED, rate: RateState }

/** What a pass grants (docs/protocol.md section 7). */
export interface GrantSpec {
  /** The grant lasts until the later of its current expiry and now + ttlMs. */
  ttlMs: number
  /** Protected requests allowed (a pass refills them); 0: unlimited. */
  maxRequests: number
}

/** An identity's grant. */
export interface Grant {
  /** Store time, epoch ms. */
  expiresAt: number
  /** Protected requests left; null when unlimited. */
  requests: number | null
}

export interface BindRequest {
  fingerprint: string
  nonce: string
  grant: GrantSpec
  /**
   * The attestation's single-use key (its `jti`, kept until its `exp`): when it was already seen,
   * bind answers REPLAYED and records no pass and no grant.
   */
  once?: OnceKey | undefined
}

export type BindResult =
  | {
    status: BindStatus.OK
    /** Number of passes recorded for this identity while its record lives. */
    passes: number
    /** The identity's grant after this pass. */
    grant: Grant
  }
  | { status: BindStatus.REPLAYED }

export interface AuthorizeRequest {
  fingerprint: string
  /** The upstream bucket (separate from the challenge bucket: its own key). */
  rate: BucketSpec
  once?: OnceKey
}

export type AuthorizeResult =
  | { status: AuthorizeStatus.OK, rate: RateState, grant: Grant }
  | { status: AuthorizeStatus.RATE_LIMITED | AuthorizeStatus.NO_GRANT | AuthorizeStatus.REPLAYED, rate: RateState }

export interface TakeRequest {
  fingerprint: string
  rate: BucketSpec
  once?: OnceKey
}

export interface TakeResult {
  status: TakeStatus
  rate: RateState
}

export interface Store {
  /** 'memory', 'redis', 'redis-cluster', … (logged and used as a metric label). */
  readonly kind: string
  /**
   * Take a token, then create the challenge (atomically). The memory store answers synchronously
   * (GET /challenge's hot path then makes no promise); callers accept a value or a promise.
   */
  issue (req: IssueRequest): IssueResult | Promise<IssueResult>
  /**
   * Take a token, then claim the nonce: UNKNOWN when absent or issued to another identity (left
   * untouched), CONSUMED when already claimed, EXPIRED when the store's time is past the deadline
   * (the nonce is consumed all the same), OK otherwise. The claim marks it consumed in the same step.
   */
  consume (req: ConsumeRequest): Promise<ConsumeResult>
  /**
   * Record a verified pass for the identity and grant it access (one atomic step); REPLAYED, and
   * nothing recorded, when the request's once-key was already seen.
   */
  bind (req: BindRequest): Promise<BindResult>
  /**
   * A protected request: take a token from the identity's upstream bucket, then check its grant
   * (NO_GRANT when missing, expired or used up) and count the request against it, atomically.
   */
  authorize (req: AuthorizeRequest): Promise<AuthorizeResult>
  /** A bare token bucket take (requests that fail before a claim still cost a token). */
  take (req: TakeRequest): Promise<TakeResult>
  /**
   * Optional; synchronous and changes nothing: the identity's bucket state when it holds no whole
   * token now (its next request would get 429), undefined otherwise. Only a store that answers
   * without a round trip has it (memory): POST /task then refuses a limited identity before
   * reading its body. The Redis stores take the token in the claim's own script, after the body.
   */
  limited?: (fingerprint: string, rate: BucketSpec) => RateState | undefined
  /** Resolves when the store is reachable; throws StoreUnavailableError otherwise. */
  ping (): Promise<void>
  /**
   * Optional; synchronous: the connection state and how long the store has been unusable (for
   * /readyz, /healthz and aog_store_connection_state). Without it the ops listener pings.
   */
  health?: () => StoreHealth
  close (): Promise<void>
}

/** The names of the store operations (the `op` label of aog_store_errors_total). */
export type StoreOp = 'issue' | 'consume' | 'bind' | 'authorize' | 'take' | 'ping'

/** A store's connection state, as aog_store_connection_state labels it. */
export const STORE_STATES = ['ready', 'connecting', 'reconnecting', 'down'] as const
export type StoreState = typeof STORE_STATES[number]

export interface StoreHealth {
  state: StoreState
  /** Epoch ms since which every operation failed or the connection was not ready; undefined while usable. */
  downSince: number | undefined
  /** Clients replaced since downSince; undefined for a store that does not replace its client. */
  replacements: number | undefined
}

/** A StoreUnavailableError that names the store operation that failed. */
export class StoreOpError extends StoreUnavailableError {
  constructor (readonly op: StoreOp, message: string, cause?: unknown) {
    super(message, cause)
  }
}

/** The `op` label for a store failure: the operation, or 'unknown' for an error that does not name one. */
export function storeOpOf (err: unknown): StoreOp | 'unknown' {
  return err instanceof StoreOpError ? err.op : 'unknown'
}

/** The tokens in a bucket that held `tokens` at `last`, refilled until `now`. */
function level (tokens: number, last: number, now: number, spec: BucketSpec): number {
  return Math.min(spec.burst, tokens + Math.max(0, now - last) * spec.perSecond / 1000)
}

/** The RateState of a bucket holding `t` tokens; `ready`: no wait before the next request. */
function rateState (t: number, spec: BucketSpec, ready: boolean): RateState {
  return {
    limit: spec.burst,
    remaining: Math.floor(t),
    resetMs: Math.ceil((spec.burst - t) * 1000 / spec.perSecond),
    retryAfterMs: ready ? 0 : Math.ceil((1 - t) * 1000 / spec.perSecond),
  }
}

/**
 * The bucket as it stands at `now`, no token taken (what a replay is answered with; the Lua
 * scripts' peek_token is the same).
 */
export function bucketState (tokens: number, last: number, now: number, spec: BucketSpec): RateState {
  const t = level(tokens, last, now, spec)
  return rateState(t, spec, t >= 1)
}

/** Shared token bucket arithmetic (memory store; the Lua scripts implement the same). */
export function takeToken (tokens: number, last: number, now: number, spec: BucketSpec): { tokens: number, admitted: boolean, rate: RateState } {
  let t = level(tokens, last, now, spec)
  const admitted = t >= 1
  if (admitted) t -= 1
  return { tokens: t, admitted, rate: rateState(t, spec, admitted) }
}
