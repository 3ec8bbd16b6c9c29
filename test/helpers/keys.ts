/**
 * Key pairs for tests. generateKeyPairSync's own KeyObjects share a lock with the job that made
 * them, and on Node 20 exporting one as a JWK can deadlock when that job is garbage collected during
 * the export (lib/keys.ts). These are re-imported from DER and share nothing with the job; the lint
 * configuration keeps generateKeyPair(Sync) out of the tests.
 */
// eslint-disable-next-line no-restricted-imports -- the one place that may call it
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'

export type KeyType = 'ed25519' | 'ed448' | 'x25519' | 'ec' | 'rsa'

export function keyPair (type: KeyType, options: { namedCurve?: string, modulusLength?: number } = {}): { publicKey: KeyObject, privateKey: KeyObject } {
  const der = (generateKeyPairSync as (type: string, options: object) => { publicKey: Buffer, privateKey: Buffer })(type, {
    ...options,
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  })
  return {
    publicKey: createPublicKey({ key: der.publicKey, format: 'der', type: 'spki' }),
    privateKey: createPrivateKey({ key: der.privateKey, format: 'der', type: 'pkcs8' }),
  }
}
