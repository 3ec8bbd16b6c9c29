/**
 * The development attestation signer (docs/operations.md "Attestation"): what an agent sends in
 * place of a real attestation service's token when the gate trusts a local key (`certs/gen.sh`
 * writes `attestation-key.pem` and its public `attestation-jwks.json`). It attests nothing about
 * the machine: it only lets the whole path (agent, gate, policy, jti) run without a TEE.
 *
 * Header `{"alg", "kid", "typ": "JWT"}`, `kid` the RFC 7638 thumbprint of the public key (what
 * `aog-server jwks` and certs/gen.sh publish). Claims: iss, aud (when given), sub = F, nonce = the
 * challenge's nonce, iat, exp (iat + ttl), jti (16 CSPRNG bytes).
 */
import { randomBytes, type KeyObject } from 'node:crypto'
import { assertionKey, loadAssertionKeys, signCompact, type AssertionAlg, type AssertionKey } from './assertion.js'
import { publicJwk } from './keys.js'
import type { ChallengeResponse } from './protocol/schemas.js'

/**
 * What an agent calls before each submission: the compact JWS to send as `attestation`, for this
 * challenge and this identity (F). A real one asks an attestation service for a token whose
 * claims carry the challenge's nonce and F (docs/operations.md).
 */
export type AttestationProvider = (challenge: ChallengeResponse, fingerprint: string) => Promise<string>

export interface LocalAttestationSignerOptions {
  /** A private key file (PEM or JWK; Ed25519 or P-256), or the key itself. */
  key: string | KeyObject
  /** The `iss` claim (the gate's --attestation-issuer, or its policy's issuer). */
  issuer: string
  /** The `aud` claim (the gate's --attestation-audience), when the gate requires one. */
  audience?: string | undefined
  /** exp - iat (default 60 s). */
  ttlSeconds?: number
  /** Clock in ms (default Date.now). */
  now?: () => number
}

function keyOf (key: KeyObject): AssertionKey {
  if (key.type !== 'private') throw new Error('attestation key: a private key is required')
  const type = key.asymmetricKeyType
  // The curve from the JWK, not asymmetricKeyDetails: on a generated key that can deadlock (lib/keys.ts).
  const pub = type === 'ed25519' || type === 'ec' ? publicJwk(key) : undefined
  const alg: AssertionAlg | undefined = pub?.crv === 'Ed25519' ? 'EdDSA' : pub?.crv === 'P-256' ? 'ES256' : undefined
  if (pub === undefined || alg === undefined) throw new Error('attestation key: only Ed25519 (EdDSA) and P-256 (ES256) private keys are allowed')
  return assertionKey('(key object)', key, alg, pub)
}

/** Load the key synchronously; errors name the file and the reason, never key material. */
function load (key: string | KeyObject): AssertionKey {
  if (typeof key !== 'string') return keyOf(key)
  try {
    return loadAssertionKeys([key]).keys[0]
  } catch (err) {
    throw new Error((err as Error).message.replace(/^assertion key /, 'attestation key '))
  }
}

/** The public JWKS a gate verifies this signer's tokens with (`--attestation-jwks`). */
export function localAttestationJwks (key: string | KeyObject): { keys: [AssertionKey['jwk']] } {
  return { keys: [load(key).jwk] }
}

/** A local attestation signer: an AttestationProvider for createAgent({ attestation }). */
export function localAttestationSigner (opts: LocalAttestationSignerOptions): AttestationProvider {
  const ttl = opts.ttlSeconds ?? 60
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600) throw new Error('attestation ttlSeconds must be an integer from 1 to 3600')
  if (opts.issuer === '' || opts.audience === '') throw new Error('attestation issuer and audience must not be empty')
  const key = load(opts.key)
  const header = Buffer.from(JSON.stringify({ alg: key.alg, kid: key.kid, typ: 'JWT' })).toString('base64url')
  const now = opts.now ?? Date.now
  return async (challenge, fingerprint) => {
    const iat = Math.floor(now() / 1000)
    return signCompact(header, {
      iss: opts.issuer,
      ...(opts.audience === undefined ? {} : { aud: opts.audience }),
      sub: fingerprint,
      nonce: challenge.nonce,
      iat,
      exp: iat + ttl,
      jti: randomBytes(16).toString('base64url'),
    }, key)
  }
}
