/**
 * The protocol's constants and formats (docs/protocol.md): the one place config, schemas, the
 * chain, the stores and the agent library take them from.
 */

/** The computation of docs/protocol.md section 3. */
export const ALGORITHM = 'sha256-chain-v2'

/** m = N / k is at most this (section 2). */
export const MAX_CHECKPOINTS = 1024

/** Longest attestation JWS accepted in a POST /task body (characters). */
export const MAX_ATTESTATION = 16384

/** Source of the 64-lowercase-hex pattern (seeds, fingerprints, digests). */
export const HEX64_SOURCE = '^[0-9a-f]{64}$'
/** Source of the nonce pattern: 22 base64url characters (16 bytes). */
export const NONCE_SOURCE = '^[A-Za-z0-9_-]{22}$'

const HEX64 = new RegExp(HEX64_SOURCE)
const NONCE = new RegExp(NONCE_SOURCE)

/** True for a 64-character lowercase hex string. */
export function isHex64 (s: unknown): s is string {
  return typeof s === 'string' && HEX64.test(s)
}

/** True for a 22-character base64url nonce that decodes to 16 bytes. */
export function isNonce (s: unknown): s is string {
  return typeof s === 'string' && NONCE.test(s) && Buffer.from(s, 'base64url').length === 16
}

/**
 * Why iterations N and checkpoint interval k cannot form a challenge (section 2: k divides N,
 * N / k at most MAX_CHECKPOINTS), or undefined when they can.
 */
export function shapeProblem (iterations: number, interval: number): { field: 'iterations' | 'checkpointInterval', message: string } | undefined {
  if (!Number.isSafeInteger(iterations) || iterations < 1) return { field: 'iterations', message: 'must be a positive integer' }
  if (!Number.isSafeInteger(interval) || interval < 1) return { field: 'checkpointInterval', message: 'must be a positive integer' }
  if (iterations % interval !== 0) return { field: 'checkpointInterval', message: `must divide iterations (${iterations})` }
  if (iterations / interval > MAX_CHECKPOINTS) return { field: 'checkpointInterval', message: `iterations / checkpointInterval must be at most ${MAX_CHECKPOINTS}` }
  return undefined
}

/** Throws a RangeError when N and k cannot form a challenge (shapeProblem). */
export function checkShape (iterations: number, interval: number): void {
  const p = shapeProblem(iterations, interval)
  if (p !== undefined) throw new RangeError(`${p.field} ${p.message}`)
}
