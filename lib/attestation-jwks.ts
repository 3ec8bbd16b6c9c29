/**
 * Where attestation keys come from (docs/operations.md "Attestation"): a JWKS file read at start-up,
 * or a JWKS URL of an attestation service, fetched over HTTPS with undici (a private CA allowed).
 *
 * A URL's keys are cached. They are fetched on first use and again once older than `refreshMs`
 * (in the background while the cached ones still serve); a token whose `kid` is unknown triggers a
 * fetch at most once per `cooldownMs` (so that forged tokens cannot make the gate hammer the
 * service). One fetch is in flight per URL however many verifications wait for it. A fetch that
 * fails (network, timeout, any status but 200, a redirect, a body over `maxBytes`, no usable key)
 * changes nothing: the keys held keep serving until `refreshMs + maxStaleMs` after they were
 * fetched; past that, and before the first fetch succeeds, verification fails closed with
 * JwksUnavailableError (the gate answers 503 with Retry-After, never an accept). After a failure
 * the next attempt waits out the cooldown.
 *
 * Keys are normalised before use: private members are dropped, keys for encryption are skipped, and
 * a key published only as a certificate (`x5c` without `n`/`e` or `x`/`y`, as Azure Attestation's
 * /certs does) gets its public key from that certificate. The token's own `jku`/`x5u`/`x5c` headers
 * are never followed: only configured sources are trusted.
 */
import { X509Certificate, type JsonWebKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Agent, Dispatcher } from 'undici'
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose'
import { FetchError, fetchAgent, fetchJson, type FetchFailure } from './bounded-fetch.js'

/** A source of verification keys for jose's jwtVerify. */
export interface KeySource {
  /** The URL or file path, as configured (metrics label, messages, the policy's `$jwks`). */
  readonly name: string
  readonly getKey: JWTVerifyGetKey
}

/** The keys of a URL cannot be had (not fetched yet, or too stale): fail closed. */
export class JwksUnavailableError extends Error {
  readonly code = 'AOG_JWKS_UNAVAILABLE'
  /** Seconds until the next fetch may be tried. */
  readonly retryAfter: number
  constructor (message: string, retryAfter: number, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'JwksUnavailableError'
    this.retryAfter = retryAfter
  }
}

/** How a fetch ended, as the metric's `result` label says it (a redirect is one more 'status'). */
export type FetchResult = 'ok' | Exclude<FetchFailure, 'redirect' | 'closed'>

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'] as const
const KTYS = new Set(['RSA', 'EC', 'OKP'])

/** The usable signature keys of a JWKS document (see the module comment); throws when there is none. */
export function normaliseJwks (doc: unknown): JSONWebKeySet {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) throw new Error('not a JWKS (no "keys" array)')
  const keys: JWK[] = []
  for (const k of (doc as { keys: unknown[] }).keys) {
    if (typeof k !== 'object' || k === null || Array.isArray(k)) continue
    const jwk = { ...(k as Record<string, unknown>) }
    for (const m of PRIVATE_MEMBERS) delete jwk[m]
    if (typeof jwk.kty !== 'string' || !KTYS.has(jwk.kty)) continue
    if (jwk.use !== undefined && jwk.use !== 'sig') continue
    const hasKey = jwk.kty === 'RSA' ? typeof jwk.n === 'string' && typeof jwk.e === 'string' : typeof jwk.x === 'string'
    if (!hasKey) {
      const der = Array.isArray(jwk.x5c) && typeof jwk.x5c[0] === 'string' ? jwk.x5c[0] : undefined
      if (der === undefined) continue
      let pub: JsonWebKey
      try {
        pub = new X509Certificate(Buffer.from(der, 'base64')).publicKey.export({ format: 'jwk' })
      } catch {
        continue
      }
      if (pub.kty !== jwk.kty) continue
      Object.assign(jwk, pub)
    }
    keys.push(jwk as JWK)
  }
  if (keys.length === 0) throw new Error('no usable signature key')
  return { keys }
}

/** A JWKS file, read once (start-up). Throws an Error naming the file when it is unusable. */
export function fileKeySource (file: string): KeySource {
  let jwks: JSONWebKeySet
  try {
    jwks = normaliseJwks(JSON.parse(readFileSync(file, 'utf8')))
  } catch (err) {
    // A read error's code, or what is wrong with the document (JSON.parse's message quotes it: not repeated).
    const why = err instanceof SyntaxError ? 'not JSON' : (err as NodeJS.ErrnoException).code ?? (err as Error).message
    throw new Error(`attestation JWKS ${file}: ${why}`)
  }
  return { name: file, getKey: createLocalJWKSet(jwks) }
}

export interface RemoteJwksOptions {
  url: string
  dispatcher: Dispatcher
  /** Whole fetch, headers and body. */
  timeoutMs: number
  /** Largest JWKS body accepted. */
  maxBytes: number
  /** Keys older than this are fetched again (in the background while they serve). */
  refreshMs: number
  /** At most one fetch per cooldown for an unknown kid, and after a failure. */
  cooldownMs: number
  /** How long past refreshMs keys may serve while fetches fail. */
  maxStaleMs: number
  now?: () => number
  /** Every fetch's outcome (metrics, log). Never given key material or the body. */
  onFetch?: (result: FetchResult, ms: number, err?: Error) => void
}

/** The remote key source of one URL. */
export class RemoteJwks implements KeySource {
  readonly name: string
  readonly #o: RemoteJwksOptions
  readonly #now: () => number
  #local: ReturnType<typeof createLocalJWKSet> | undefined
  /** When the keys held were fetched. */
  #fetchedAt = Number.NEGATIVE_INFINITY
  /** When the last fetch started, and whether it failed. */
  #attemptAt = Number.NEGATIVE_INFINITY
  #failed = false
  #inflight: Promise<void> | undefined

  constructor (opts: RemoteJwksOptions) {
    this.name = opts.url
    this.#o = opts
    this.#now = opts.now ?? Date.now
  }

  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const now = this.#now()
    if (!this.#usable(now)) {
      // Nothing to serve: wait for a fetch (one for every waiter), unless one just failed.
      if (this.#failed && now < this.#attemptAt + this.#o.cooldownMs) throw this.#unavailable(now)
      await this.#refresh()
      if (!this.#usable(this.#now())) throw this.#unavailable(this.#now())
    } else if (now >= this.#fetchedAt + this.#o.refreshMs && this.#inflight === undefined && now >= this.#attemptAt + this.#o.cooldownMs) {
      // Stale but serving: fetch in the background; this verification does not wait.
      void this.#refresh()
    }
    try {
      return await this.#local!(header, token)
    } catch (err) {
      // An unknown kid: maybe the service rotated. Fetch again, at most once per cooldown.
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err
      const t = this.#now()
      if (this.#inflight === undefined && t < this.#attemptAt + this.#o.cooldownMs) throw err
      const before = this.#fetchedAt
      await this.#refresh()
      if (this.#fetchedAt === before) {
        // The fetch failed: the key may be a new one the service rotated to; 503 rather than 403.
        throw this.#failed ? this.#unavailable(this.#now()) : err
      }
      return await this.#local!(header, token)
    }
  }

  #usable (now: number): boolean {
    return this.#local !== undefined && now < this.#fetchedAt + this.#o.refreshMs + this.#o.maxStaleMs
  }

  #unavailable (now: number): JwksUnavailableError {
    const retry = Math.max(1, Math.ceil((this.#attemptAt + this.#o.cooldownMs - now) / 1000))
    const why = this.#local === undefined ? 'could not be fetched' : 'are too stale and could not be fetched again'
    return new JwksUnavailableError(`the attestation keys of ${this.name} ${why}`, retry)
  }

  /** Fetch now, or join the fetch in flight. Never rejects: a failure is recorded. */
  #refresh (): Promise<void> {
    if (this.#inflight !== undefined) return this.#inflight
    const t0 = this.#now()
    this.#attemptAt = t0
    this.#inflight = this.#fetch().then((jwks) => {
      this.#local = createLocalJWKSet(jwks)
      this.#fetchedAt = this.#now()
      this.#failed = false
      this.#o.onFetch?.('ok', this.#now() - t0)
    }, (err: unknown) => {
      this.#failed = true
      const e = err instanceof FetchError ? err : new FetchError('network', (err as Error).message, undefined, err)
      this.#o.onFetch?.(e.outcome as FetchResult, this.#now() - t0, e)
    }).finally(() => { this.#inflight = undefined })
    return this.#inflight
  }

  async #fetch (): Promise<JSONWebKeySet> {
    const { url, dispatcher, timeoutMs, maxBytes } = this.#o
    // Redirects are not followed: the configured URL is the one trusted.
    const { doc } = await fetchJson(url, { dispatcher, timeoutMs, maxBytes, accept: 'application/jwk-set+json, application/json' })
    try {
      return normaliseJwks(doc)
    } catch (err) {
      throw new FetchError('invalid', (err as Error).message, undefined, err)
    }
  }
}

/** The HTTPS client of the JWKS URLs: system CAs, or only `ca` when given. */
export const jwksDispatcher: (ca: Buffer | undefined, timeoutMs: number) => Agent = fetchAgent
