/**
 * Attestation (docs/protocol.md section 4, step 7): a compact JWS from an attestation service (or
 * a local signer in development), verified with jose against an algorithm allow-list (`none` and
 * HMAC algorithms are never accepted) and the keys of the configured sources (lib/attestation-jwks.ts),
 * then bound and checked:
 *   - bound to this challenge and this identity: the issuer's nonce claim holds the challenge's
 *     nonce and its subject claim holds the caller's fingerprint F (by default `nonce` and `sub`; a
 *     policy names other claims for services whose tokens carry them elsewhere). Never optional;
 *   - the claim policy (lib/attestation-policy.ts), when configured: the issuer must have an entry,
 *     and the token must carry the allowed value of every claim the entry names;
 *   - `jti`, when present, is used once: the verifier returns it as a once-key for the store's
 *     bind, which answers REPLAYED for a second use (then 403, see lib/handlers/task.ts).
 * A refusal is 403 AOG_ATTESTATION_INVALID with a detail that names the claim at fault, never a
 * value from the token; keys that cannot be had are 503 AOG_UNAVAILABLE with Retry-After. Every
 * outcome is counted by issuer (a configured one, or "unknown") and reason.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { decodeJwt, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { Dispatcher } from 'undici'
import { AogError } from './errors.js'
import { ConfigError } from './config.js'
import type { Logger } from './log.js'
import type { Metrics } from './metrics.js'
import type { OnceKey } from './stores/store.js'
import { JwksUnavailableError, RemoteJwks, fileKeySource, jwksDispatcher, type KeySource } from './attestation-jwks.js'
import {
  DEFAULT_NONCE_CLAIM, DEFAULT_SUBJECT_CLAIM, claimAllowed, claimAt, claimBinds, readAttestationPolicy, type AttestationPolicy, type IssuerPolicy,
} from './attestation-policy.js'

export const ATTESTATION_ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256']

/** Seconds of clock skew allowed on exp/nbf/iat. */
export const ATTESTATION_CLOCK_TOLERANCE_S = 5

/**
 * The longest a jti is remembered. Past it a replayed token is still refused: its nonce binding
 * names a challenge that is long consumed and gone.
 */
export const MAX_JTI_MEMORY_MS = 24 * 3600 * 1000

/** The longest jti taken (a longer one is refused). */
const MAX_JTI_LENGTH = 256

export interface AttestationOptions {
  /** The JWKS file (--attestation-jwks). */
  jwksFile?: string | undefined
  /** The JWKS URLs (--attestation-jwks-url). */
  jwksUrls?: string[] | undefined
  /** CA bundle (PEM) the URLs' certificates must chain to; default: the system CAs. */
  jwksCa?: Buffer | undefined
  jwksTimeoutMs?: number
  jwksMaxBytes?: number
  jwksRefreshMs?: number
  jwksCooldownMs?: number
  jwksMaxStaleMs?: number
  /** Without a policy: the required `iss` (default: any). */
  issuer?: string | undefined
  /** The required `aud` (a policy entry's `$audience` takes precedence). */
  audience?: string | undefined
  /** The claim policy file (--attestation-policy). */
  policyFile?: string | undefined
  /** Whether a submission must carry an attestation. */
  required: boolean
  metrics?: Metrics | undefined
  logger?: Logger | undefined
  /** Clock (ms) for the remote key cache and the jti memory. */
  now?: () => number
  /** Tests: the HTTPS client of the JWKS URLs. */
  dispatcher?: Dispatcher
}

/** A verified attestation: the metrics label of its issuer, and its single-use key when it had a jti. */
export interface AttestationResult {
  issuer: string
  once: OnceKey | undefined
}

/**
 * The step-7 check: resolves with the result (undefined when no attestation was sent and none is
 * required), rejects with the AogError to answer.
 */
export interface AttestationVerifier {
  (token: string | undefined, fingerprint: string, nonce: string): Promise<AttestationResult | undefined>
  /** Count an outcome decided after verification (a replayed jti, found by the store). */
  record (issuer: string, result: 'accepted' | 'rejected', reason: string): void
  close (): Promise<void>
}

/**
 * How one issuer's tokens are checked (a policy entry, or the one rule of a gate without a policy),
 * with the required `iss` (undefined: any).
 */
type Rule = Omit<IssuerPolicy, 'issuer' | 'jwks'> & { issuer: string | undefined, getKey: JWTVerifyGetKey }

/**
 * A key function that tries each source in turn: the first that has the key wins. When none has
 * it and one of them could not be had, that is the answer (503: the key may be there), else the
 * last refusal.
 */
function anyOf (sources: KeySource[]): JWTVerifyGetKey {
  if (sources.length === 1) return sources[0]!.getKey
  return async (header, token) => {
    let last: unknown
    let unavailable: JwksUnavailableError | undefined
    for (const s of sources) {
      try {
        return await s.getKey(header, token)
      } catch (err) {
        if (err instanceof JwksUnavailableError) unavailable ??= err
        last = err
      }
    }
    throw unavailable ?? last
  }
}

/** The once-key of a jti: per issuer, a fixed 64 hex whatever the jti (the store's key form). */
export function jtiOnceId (issuer: string | undefined, jti: string): string {
  return createHash('sha256').update(JSON.stringify([issuer ?? '', jti])).digest('hex')
}

function refuse (reason: string, detail: string, cause?: unknown): AogError {
  return new AogError('AOG_ATTESTATION_INVALID', detail, cause === undefined ? { reason } : { cause, reason })
}

/** Build the step-7 check. Throws at start-up when a key file or the policy is unusable. */
export function createAttestationVerifier (opts: AttestationOptions): AttestationVerifier {
  const now = opts.now ?? Date.now
  const sources = new Map<string, KeySource>()
  if (opts.jwksFile !== undefined) sources.set(opts.jwksFile, fileKeySource(opts.jwksFile))
  const urls = opts.jwksUrls ?? []
  const timeoutMs = opts.jwksTimeoutMs ?? 5000
  const owned = urls.length > 0 && opts.dispatcher === undefined ? jwksDispatcher(opts.jwksCa, timeoutMs) : undefined
  for (const url of urls) {
    sources.set(url, new RemoteJwks({
      url,
      dispatcher: opts.dispatcher ?? owned!,
      timeoutMs,
      maxBytes: opts.jwksMaxBytes ?? 256 * 1024,
      refreshMs: opts.jwksRefreshMs ?? 600_000,
      cooldownMs: opts.jwksCooldownMs ?? 30_000,
      maxStaleMs: opts.jwksMaxStaleMs ?? 3_600_000,
      now,
      onFetch: (result, ms, err) => {
        opts.metrics?.attestationJwksFetches.inc({ url, result })
        if (err !== undefined) opts.logger?.warn({ url, result, ms, err: err.message }, 'attestation JWKS fetch failed; the keys held (if any) keep serving')
        else opts.logger?.debug({ url, ms }, 'attestation JWKS fetched')
      },
    }))
  }
  const all = [...sources.values()]

  let policy: AttestationPolicy | undefined
  if (opts.policyFile !== undefined) {
    try {
      policy = readAttestationPolicy(opts.policyFile, [...sources.keys()], opts.audience)
    } catch (err) {
      throw new ConfigError([{ field: 'attestationPolicy', message: (err as Error).message }])
    }
  }
  const rules = new Map<string, Rule>()
  for (const p of policy?.values() ?? []) {
    rules.set(p.issuer, { ...p, getKey: anyOf(p.jwks === undefined ? all : p.jwks.map((n) => sources.get(n)!)) })
  }
  // Without a policy: one rule for every token, the issuer and audience as configured.
  const single: Rule | undefined = policy !== undefined || all.length === 0
    ? undefined
    : {
        issuer: opts.issuer,
        audience: opts.audience,
        nonceClaim: [DEFAULT_NONCE_CLAIM],
        noncePath: DEFAULT_NONCE_CLAIM,
        subjectClaim: [DEFAULT_SUBJECT_CLAIM],
        subjectPath: DEFAULT_SUBJECT_CLAIM,
        claims: [],
        getKey: anyOf(all),
      }
  // The metrics label: a configured issuer, else "unknown" (a token names any issuer it likes).
  const known = new Set<string>(policy !== undefined ? policy.keys() : opts.issuer !== undefined ? [opts.issuer] : [])
  const label = (iss: unknown): string => typeof iss === 'string' && known.has(iss) ? iss : 'unknown'
  const record = (issuer: string, result: 'accepted' | 'rejected' | 'unavailable', reason: string): void => {
    opts.metrics?.attestationOutcomes.inc({ issuer, result, reason })
  }

  /** `claimed` (the payload, unverified) only chooses the issuer's rule: every claim read is verified here. */
  const check = async (token: string, claimed: JWTPayload, fingerprint: string, nonce: string): Promise<AttestationResult> => {
    const rule = single ?? (typeof claimed.iss === 'string' ? rules.get(claimed.iss) : undefined)
    if (rule === undefined) {
      throw all.length === 0
        ? refuse('unconfigured', 'this gate cannot verify attestations')
        : refuse('issuer', typeof claimed.iss === 'string' ? 'attestation issuer is not in this gate\'s attestation policy' : 'attestation has no issuer (iss)')
    }
    let payload: JWTPayload
    try {
      payload = (await jwtVerify(token, rule.getKey, {
        algorithms: ATTESTATION_ALGORITHMS,
        issuer: rule.issuer ?? (policy !== undefined ? claimed.iss : undefined),
        audience: rule.audience,
        clockTolerance: ATTESTATION_CLOCK_TOLERANCE_S,
        requiredClaims: ['exp'],
        currentDate: new Date(now()),
      })).payload
    } catch (err) {
      if (err instanceof JwksUnavailableError) {
        throw new AogError('AOG_UNAVAILABLE', 'the attestation keys are unavailable; this nonce is spent: fetch a new challenge and try again shortly', { retryAfter: err.retryAfter, cause: err, reason: 'keys_unavailable' })
      }
      if (err instanceof errors.JWTExpired) throw refuse('expired', 'attestation expired', err)
      if (err instanceof errors.JWTClaimValidationFailed) {
        if (err.claim === 'aud') throw refuse('audience', 'attestation audience (aud) is not this gate', err)
        if (err.claim === 'iss') throw refuse('issuer', 'attestation issuer (iss) is not the one this gate trusts', err)
        throw refuse('claims', `attestation claim ${err.claim} is invalid`, err)
      }
      if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) throw refuse('algorithm', 'attestation algorithm not allowed', err)
      if (err instanceof errors.JWKSNoMatchingKey) throw refuse('signature', 'attestation is signed by a key this gate does not trust', err)
      throw refuse('signature', 'attestation signature or claims invalid', err)
    }
    if (!claimBinds(claimAt(payload, rule.subjectClaim), fingerprint)) throw refuse('subject', `attestation subject is not the caller (claim ${rule.subjectPath})`)
    if (!claimBinds(claimAt(payload, rule.nonceClaim), nonce)) throw refuse('nonce', `attestation is for another challenge (claim ${rule.noncePath})`)
    for (const c of rule.claims) {
      const v = claimAt(payload, c.segments)
      if (v === undefined) throw refuse('policy', `attestation claim ${c.path} is missing (required by the attestation policy)`)
      if (!claimAllowed(v, c.allowed)) throw refuse('policy', `attestation claim ${c.path} is not allowed by the attestation policy`)
    }
    let once: OnceKey | undefined
    if (payload.jti !== undefined) {
      if (typeof payload.jti !== 'string' || payload.jti === '' || payload.jti.length > MAX_JTI_LENGTH) throw refuse('claims', 'attestation claim jti is invalid')
      // Remembered until the token expires (with the clock tolerance, and a second for the stores' own clocks).
      const ttlMs = Math.min(MAX_JTI_MEMORY_MS, payload.exp! * 1000 - now() + (ATTESTATION_CLOCK_TOLERANCE_S + 1) * 1000)
      once = { id: jtiOnceId(payload.iss, payload.jti), ttlMs: Math.max(1000, ttlMs) }
    }
    return { issuer: label(payload.iss), once }
  }

  const verify = async (token: string | undefined, fingerprint: string, nonce: string): Promise<AttestationResult | undefined> => {
    if (token === undefined) {
      if (!opts.required) return undefined
      record('unknown', 'rejected', 'missing')
      throw new AogError('AOG_ATTESTATION_INVALID', 'an attestation is required')
    }
    // Unverified: for the issuer's rule and the metrics label.
    let claimed: JWTPayload
    try {
      claimed = decodeJwt(token)
    } catch (err) {
      record('unknown', 'rejected', 'malformed')
      throw refuse('malformed', 'attestation is not a JWT', err)
    }
    try {
      return await check(token, claimed, fingerprint, nonce)
    } catch (err) {
      if (err instanceof AogError && err.reason !== undefined) record(label(claimed.iss), err.code === 'AOG_UNAVAILABLE' ? 'unavailable' : 'rejected', err.reason)
      throw err
    }
  }
  return Object.assign(verify, {
    record,
    close: async () => { await owned?.close() },
  })
}

/** Read a CA bundle for the JWKS URLs (start-up); throws a ConfigError naming the field. */
export function readJwksCa (file: string | undefined): Buffer | undefined {
  if (file === undefined) return undefined
  try {
    return readFileSync(file)
  } catch (err) {
    throw new ConfigError([{ field: 'attestationJwksCa', message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` }])
  }
}
