/**
 * Optional attestation (docs/protocol.md section 4, step 7): a compact JWS signed by a key of the
 * configured JWKS, whose `sub` is the caller's fingerprint F and whose `nonce` is the challenge's
 * nonce (so it cannot be replayed for another challenge or identity). Verified with jose (an
 * algorithm allow-list; `none` and HMAC algorithms are never accepted).
 */
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { AogError } from './errors.js'

export const ATTESTATION_ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256']

export interface AttestationOptions {
  jwksFile?: string | undefined
  issuer?: string | undefined
  audience?: string | undefined
  required: boolean
}

export type AttestationVerifier = (token: string | undefined, fingerprint: string, nonce: string) => Promise<void>

/** Build the step-7 check. Throws at start-up when the JWKS file is unreadable. */
export function createAttestationVerifier (opts: AttestationOptions): AttestationVerifier {
  let jwks: ReturnType<typeof createLocalJWKSet> | undefined
  if (opts.jwksFile !== undefined) {
    jwks = createLocalJWKSet(JSON.parse(readFileSync(opts.jwksFile, 'utf8')) as JSONWebKeySet)
  }
  return async (token, fingerprint, nonce) => {
    if (token === undefined) {
      if (opts.required) throw new AogError('AOG_ATTESTATION_INVALID', 'an attestation is required')
      return
    }
    if (jwks === undefined) throw new AogError('AOG_ATTESTATION_INVALID', 'this gate cannot verify attestations')
    let payload: Record<string, unknown>
    try {
      const r = await jwtVerify(token, jwks, {
        algorithms: ATTESTATION_ALGORITHMS,
        issuer: opts.issuer,
        audience: opts.audience,
        clockTolerance: 5,
        requiredClaims: ['exp', 'sub', 'nonce'],
      })
      payload = r.payload as Record<string, unknown>
    } catch (err) {
      throw new AogError('AOG_ATTESTATION_INVALID', 'attestation signature or claims invalid', { cause: err })
    }
    if (payload.sub !== fingerprint) throw new AogError('AOG_ATTESTATION_INVALID', 'attestation subject is not the caller')
    if (payload.nonce !== nonce) throw new AogError('AOG_ATTESTATION_INVALID', 'attestation is for another challenge')
  }
}
