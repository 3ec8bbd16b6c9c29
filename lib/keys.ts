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

/** RFC 7638 thumbprint: SHA-256 of the required public members in lexicographic order, base64url. */
export function jwkThumbprint (jwk: JsonWebKey): string {
  const members = jwk.kty === 'OKP'
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
    : jwk.kty === 'EC'
      ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
      : { e: jwk.e, kty: jwk.kty, n: jwk.n }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}
