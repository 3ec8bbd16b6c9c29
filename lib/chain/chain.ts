/**
 * sha256-chain-v2 (docs/protocol.md section 3), pure functions.
 *
 *   h0  = SHA-256("aog-sha256-chain-v2" || 0x00 || seed(32) || nonce(16) || F(32))
 *   K   = SHA-256("aog-sha256-chain-v2/key" || 0x00 || h0)
 *   h_i = SHA-256(h_(i-1) XOR K)
 *
 * Keying every link with K makes every segment depend on the challenge: a chain computed once
 * cannot be reused for another challenge or identity (v1's unkeyed links could, under sampling).
 * Every link hashes exactly 32 bytes, so each is one SHA-256 block whose padding is constant
 * (0x80 at byte 32, bit length 256 in the last word). `iterateTs` exploits that: the state stays in
 * 32-bit locals (sha256-link.ts, generated and fully unrolled), with no allocation per link, which
 * is several times faster than node:crypto per link (bench/chain.ts).
 */
import { createHash } from 'node:crypto'
import { iterateWords } from './sha256-link.js'
import { checkShape, isHex64, isNonce } from '../protocol/constants.js'

export { ALGORITHM, checkShape, isHex64, isNonce } from '../protocol/constants.js'
const DOMAIN = Buffer.from('aog-sha256-chain-v2\0', 'latin1')
const KEY_DOMAIN = Buffer.from('aog-sha256-chain-v2/key\0', 'latin1')

/** A chain implementation: advances a 32-byte digest `n` links keyed by `key` (32 bytes), in place. */
export interface ChainImpl {
  readonly name: 'typescript' | 'native'
  iterate (digest: Uint8Array, key: Uint8Array, n: number): void
}

/**
 * Advance `digest` (32 bytes) by `n` keyed SHA-256 links, in place, in pure TypeScript (the
 * unrolled single-block compression of sha256-link.ts). Allocates two 8-word arrays per call,
 * none per link.
 */
export function iterateTs (digest: Uint8Array, key: Uint8Array, n: number): void {
  if (digest.length !== 32) throw new RangeError('digest must be 32 bytes')
  if (key.length !== 32) throw new RangeError('key must be 32 bytes')
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('n must be a non-negative integer')
  const s = new Int32Array(8)
  const k = new Int32Array(8)
  for (let i = 0; i < 8; i++) { s[i] = read32(digest, i * 4); k[i] = read32(key, i * 4) }
  iterateWords(s, k, n)
  for (let i = 0; i < 8; i++) write32(digest, i * 4, s[i]!)
}

function read32 (b: Uint8Array, o: number): number {
  return (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!
}

function write32 (b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24; b[o + 1] = v >>> 16; b[o + 2] = v >>> 8; b[o + 3] = v
}

export const typescriptChain: ChainImpl = { name: 'typescript', iterate: iterateTs }

/** h0 of docs/protocol.md section 3. Throws RangeError on malformed inputs. */
export function initialDigest (seedHex: string, nonce: string, fingerprintHex: string): Buffer {
  if (!isHex64(seedHex)) throw new RangeError('seed must be 64 lowercase hex characters')
  if (!isNonce(nonce)) throw new RangeError('nonce must be 22 base64url characters (16 bytes)')
  if (!isHex64(fingerprintHex)) throw new RangeError('fingerprint must be 64 lowercase hex characters')
  return createHash('sha256')
    .update(DOMAIN)
    .update(Buffer.from(seedHex, 'hex'))
    .update(Buffer.from(nonce, 'base64url'))
    .update(Buffer.from(fingerprintHex, 'hex'))
    .digest()
}

/** K of docs/protocol.md section 3: the key of every link, derived from h0. */
export function chainKey (h0: Uint8Array): Buffer {
  if (h0.length !== 32) throw new RangeError('h0 must be 32 bytes')
  return createHash('sha256').update(KEY_DOMAIN).update(h0).digest()
}

/** trace_hash: SHA-256 over the raw checkpoint digests, concatenated. */
export function traceHash (checkpoints: readonly Uint8Array[]): Buffer {
  const h = createHash('sha256')
  for (const c of checkpoints) h.update(c)
  return h.digest()
}

export interface ChainParams {
  seed: string
  nonce: string
  iterations: number
  checkpoint_interval: number
}

export interface Solution {
  result_hash: string
  checkpoints: string[]
  trace_hash: string
}

/**
 * Compute the whole chain for a challenge and identity: result hash, checkpoints and trace hash.
 * This is what an agent submits (docs/protocol.md section 4).
 */
export function solveChain (params: ChainParams, fingerprint: string, impl: ChainImpl = typescriptChain): Solution {
  checkShape(params.iterations, params.checkpoint_interval)
  const digest = initialDigest(params.seed, params.nonce, fingerprint)
  const key = chainKey(digest)
  const m = params.iterations / params.checkpoint_interval
  const raw: Buffer[] = []
  for (let j = 0; j < m; j++) {
    impl.iterate(digest, key, params.checkpoint_interval)
    raw.push(Buffer.from(digest))
  }
  return {
    result_hash: digest.toString('hex'),
    checkpoints: raw.map((c) => c.toString('hex')),
    trace_hash: traceHash(raw).toString('hex'),
  }
}
