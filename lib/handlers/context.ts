/** What every handler receives: the request, its resolved identity, and the gate's parts. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { Identity } from '../identity/tls.js'
import type { OnceKey, RateState, Store } from '../stores/store.js'
import type { VerifyPool } from '../verification/pool.js'
import type { AttestationVerifier } from '../attestation.js'
import type { RandomPool } from '../random.js'
import type { AssertionSigner } from '../assertion.js'
import type { Upstream } from '../upstream.js'
import { AogError } from '../errors.js'
import { rateHeaders } from '../http/reply.js'
import { signatureError } from '../webbotauth/httpsig.js'

export interface GateParts {
  config: Readonly<Config>
  store: Store
  pool: VerifyPool
  metrics: Metrics
  attest: AttestationVerifier
  random: RandomPool
  /** Signs X-AOG-Agent (with --assertion-key; /auth and the proxy need it). */
  assertion?: AssertionSigner | undefined
  /** The protected upstream (direct mode with --upstream). */
  upstream?: Upstream | undefined
}

export interface RequestContext {
  /** The gate's request id; in forwarded mode the proxy's (its rid) once its signature verified. Sent as X-Request-Id. */
  reqId: string
  route: string
  req: IncomingMessage
  res: ServerResponse
  identity: Identity
  log: Logger
  /** A single-use key for this request's signed identity (forwarded mode), checked by the store call. */
  once?: OnceKey | undefined
  /** Set by the handler: the code or 'ok', for the log line and metrics. */
  outcome: string
  /** A proxied request's upstream status and time (ms), for the log line. */
  upstream?: { status: number, ms: number } | undefined
  /**
   * Answer with `status`, a flat header list (writeHead's form, made for this answer: X-Request-Id
   * is appended to it) and `body`. A request is answered once: a handler calls this, or throws
   * (the gate answers the error).
   */
  send: (status: number, headers: string[], body: string) => void
  /** send() was called (the response may not be written yet). */
  readonly answered: boolean
}

/**
 * A route handler: answers with ctx.send, or throws (rejects with) the refusal. It may finish
 * synchronously (GET /challenge on the memory store) or return a promise.
 */
export type Handler = (ctx: RequestContext, parts: GateParts) => void | Promise<void>

/** The 429 for an empty bucket, with Retry-After and RateLimit headers. */
export function rateLimited (rate: RateState, perSecond: number): AogError {
  return new AogError('AOG_RATE_LIMITED', 'too many requests for this identity', {
    retryAfter: Math.max(1, Math.ceil(rate.retryAfterMs / 1000)),
    headers: rateHeaders(rate, perSecond),
  })
}

/**
 * The 401 for a request whose single-use key was already seen: a forwarded header set's request id,
 * or a Web Bot Auth signature's nonce.
 */
export function replayedIdentity (ctx: RequestContext): AogError {
  if (ctx.identity.source === 'signature') return signatureError('the signature\'s nonce was already used (replayed signature)')
  return new AogError('AOG_IDENTITY_REQUIRED', 'the forwarded identity was already used (replayed request id)')
}
