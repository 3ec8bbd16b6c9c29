/**
 * Public keys as JWKs, and their RFC 7638 thumbprints: the one home for both.
 *
 * The JWK is exported from a fresh copy of the public key, made from its SPKI encoding. On Node 20,
 * exporting a JWK of a key that generateKeyPair(Sync) made (or of its public half) can deadlock the
 * process: the export holds the key's lock while it allocates, and a garbage collection then may
 * finalize the key generation job, whose destructor takes the same lock (docs/decisions/jwk-export-deadlock.md).
 * The SPKI export allocates only after it lets go of the lock, and the copy shares no lock with a job.
 */
import { createHash, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto'

/** The public JWK of a key (public, or the public half of a private one). */
export function publicJwk (key: KeyObject): JsonWebKey {
  const pub = key.type === 'private' ? createPublicKey(key) : key
  return createPublicKey({ key: pub.export({ type: 'spki', format: 'der' }), format: 'der', type: 'spki' }).export({ format: 'jwk' })
}

/** The required members of each key type (RFC 7638 section 3.2), in lexicographic order. */
const REQUIRED: Record<string, readonly string[]> = { OKP: ['crv', 'kty', 'x'], EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'] }

/**
 * RFC 7638 thumbprint: SHA-256 of the required public members in lexicographic order, base64url.
 * Throws for another key type or a missing member (which JSON.stringify would silently drop).
 */
export function jwkThumbprint (jwk: JsonWebKey): string {
  const required = typeof jwk.kty === 'string' ? REQUIRED[jwk.kty] : undefined
  if (required === undefined) throw new TypeError(`no thumbprint for a key of type ${String(jwk.kty)}`)
  const members: Record<string, string> = {}
  for (const m of required) {
    const v = (jwk as Record<string, unknown>)[m]
    if (typeof v !== 'string') throw new TypeError(`a ${jwk.kty} key without its ${m}`)
    members[m] = v
  }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}
