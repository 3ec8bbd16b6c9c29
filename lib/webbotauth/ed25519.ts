/**
 * Ed25519 signature verification for Web Bot Auth. libsodium (the optional sodium-native package)
 * verifies in about half the time of node:crypto's OpenSSL, the largest single cost of a signed
 * request (docs/decisions/signature-cost.md); node:crypto where it is not installed, fails its
 * self-test, or AOG_NATIVE=0 (to test the fallback). With the directory's filter (weakEd25519Key)
 * both accept the same keys.
 */
import { createRequire } from 'node:module'
import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto'

export interface Ed25519Verifier {
  readonly name: 'libsodium' | 'node:crypto'
  /** True when `signature` (64 bytes) is `key`'s signature of `data`; never throws. */
  verify (data: Buffer, key: KeyObject, signature: Buffer): boolean
}

interface Sodium {
  crypto_sign_verify_detached (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean
}

/** RFC 8032 section 7.1, test 1 (the empty message): the self-test of a loaded libsodium. */
const SELF_TEST = {
  key: Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex'),
  signature: Buffer.from('e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b', 'hex'),
}

/**
 * An Ed25519 key's 32 raw public bytes, the end of its SPKI encoding (not its JWK: lib/keys.ts says
 * why), read once per KeyObject (a private key's from its public half); undefined for another type.
 */
const rawKeys = new WeakMap<KeyObject, Buffer>()
function rawKey (key: KeyObject): Buffer | undefined {
  if (key.asymmetricKeyType !== 'ed25519') return undefined
  let raw = rawKeys.get(key)
  if (raw === undefined) {
    raw = (key.type === 'private' ? createPublicKey(key) : key).export({ type: 'spki', format: 'der' }).subarray(-32)
    rawKeys.set(key, raw)
  }
  return raw
}

export const nodeCryptoVerifier: Ed25519Verifier = {
  name: 'node:crypto',
  verify (data, key, signature) {
    if (signature.length !== 64) return false
    try {
      return cryptoVerify(null, data, key, signature)
    } catch {
      return false
    }
  },
}

/** libsodium's verifier, or why it is unavailable. */
export function loadSodiumVerifier (load = (): unknown => createRequire(import.meta.url)('sodium-native')): { verifier: Ed25519Verifier | undefined, reason: string } {
  if (process.env.AOG_NATIVE === '0') return { verifier: undefined, reason: 'disabled by AOG_NATIVE=0' }
  let sodium: Sodium
  try {
    sodium = load() as Sodium
  } catch (err) {
    return { verifier: undefined, reason: `sodium-native not installed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` }
  }
  const tampered = Buffer.from(SELF_TEST.signature)
  tampered[0]! ^= 1
  try {
    if (!sodium.crypto_sign_verify_detached(SELF_TEST.signature, Buffer.alloc(0), SELF_TEST.key) ||
      sodium.crypto_sign_verify_detached(tampered, Buffer.alloc(0), SELF_TEST.key)) return { verifier: undefined, reason: 'self-test failed' }
  } catch (err) {
    return { verifier: undefined, reason: `self-test threw (${(err as Error).message})` }
  }
  return {
    verifier: {
      name: 'libsodium',
      verify (data, key, signature) {
        const raw = rawKey(key)
        if (signature.length !== 64 || raw === undefined) return false
        try {
          return sodium.crypto_sign_verify_detached(signature, data, raw)
        } catch {
          return false
        }
      },
    },
    reason: 'loaded',
  }
}

let chosen: { verifier: Ed25519Verifier, reason: string } | undefined

/** The verifier the gate uses, libsodium when it loads, else node:crypto; and why. */
export function ed25519VerifierChoice (): { verifier: Ed25519Verifier, reason: string } {
  if (chosen === undefined) {
    const sodium = loadSodiumVerifier()
    chosen = { verifier: sodium.verifier ?? nodeCryptoVerifier, reason: sodium.reason }
  }
  return chosen
}

export function ed25519Verifier (): Ed25519Verifier {
  return ed25519VerifierChoice().verifier
}

/**
 * The y coordinates (sign bit cleared) of Ed25519's eight small-order points, hex: 0 (two points of
 * order 4), 1 (the identity), the two of order 8 (two points each), p - 1 (order 2).
 */
const SMALL_ORDER_Y = new Set([
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
])

/**
 * A public key (32 raw bytes) no one should be trusted under: a small-order point, under which
 * signatures can be forged without any secret (OpenSSL accepts R = identity, S = 0 for every message
 * under the identity), or a non-canonical encoding (y >= p). libsodium refuses these at every
 * verification; the directory refuses them for both verifiers.
 */
export function weakEd25519Key (raw: Uint8Array): boolean {
  if (raw.length !== 32) return true
  const y = Buffer.from(raw)
  y[31]! &= 0x7f
  if (SMALL_ORDER_Y.has(y.toString('hex'))) return true
  // y >= p = 2^255 - 19: ed..ff followed by thirty ff bytes and 7f.
  if (y[31] !== 0x7f || y[0]! < 0xed) return false
  for (let i = 1; i < 31; i++) if (y[i] !== 0xff) return false
  return true
}
