/**
 * Difficulty, plausibility and verification planning (docs/protocol.md section 4, steps 5 and 6).
 * Pure functions: the handler applies them to a claimed challenge record.
 */
import { randomInt, timingSafeEqual } from 'node:crypto'
import { AogError } from '../errors.js'
import type { ChallengeRecord } from '../stores/store.js'
import type { Segment } from './messages.js'
import { chainKey, initialDigest, traceHash } from '../chain/chain.js'

export interface Policy {
  verify: 'full' | 'sampled'
  samples: number
  minNsPerIteration: number
  runtimeToleranceMs: number
}

/**
 * Step 5: `runtime_ms` must not exceed the elapsed time the gate observed since issue (plus a
 * tolerance), and the elapsed time must not be below N x the floor. Throws AOG_RUNTIME_IMPLAUSIBLE.
 */
export function checkPlausible (runtimeMs: number, record: ChallengeRecord, now: number, policy: Policy): void {
  const elapsed = now - record.issuedAt
  if (runtimeMs > elapsed + policy.runtimeToleranceMs) {
    throw new AogError('AOG_RUNTIME_IMPLAUSIBLE', 'runtime_ms exceeds the time since the challenge was issued')
  }
  const floorMs = record.iterations * policy.minNsPerIteration / 1e6
  if (elapsed < floorMs) {
    throw new AogError('AOG_RUNTIME_IMPLAUSIBLE', 'submitted faster than the chain can be computed')
  }
}

/** S distinct segment indices out of m, drawn with the CSPRNG (partial Fisher-Yates), sorted. */
export function pickSamples (m: number, s: number): number[] {
  const n = Math.min(m, s)
  const idx = Array.from({ length: m }, (_, i) => i)
  for (let i = 0; i < n; i++) {
    const j = i + randomInt(m - i)
    const t = idx[i]!; idx[i] = idx[j]!; idx[j] = t
  }
  return idx.slice(0, n).sort((a, b) => a - b)
}

export interface Submission {
  nonce: string
  result_hash: string
  trace_hash?: string | undefined
  checkpoints?: string[] | undefined
}

export interface Plan {
  mode: 'full' | 'sampled'
  /** Segments grouped into batches, one task per batch. */
  batches: Segment[][]
  /** Total segments that will be recomputed. */
  segments: number
}

function eq (a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Constant-time equality of two hex strings (false on a length mismatch, never a throw). */
export function sameHex (a: string, b: string): boolean {
  return eq(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'))
}

/**
 * Step 6 up to the recomputation: check the checkpoints' shape against the record (the last equals
 * result_hash, trace_hash matches, m entries; else AOG_TRACE_MISMATCH), then choose the segments
 * to recompute and split them into at most `parallelism` batches. The sample is drawn here, after
 * the body has arrived, so the client cannot know which segments will be checked.
 */
export function planVerification (record: ChallengeRecord, sub: Submission, policy: Policy, parallelism: number): Plan {
  const h0 = initialDigest(record.seed, record.nonce, record.fingerprint)
  const key = chainKey(h0)
  const result = Buffer.from(sub.result_hash, 'hex')
  const k = record.checkpointInterval
  const m = record.iterations / k
  if (sub.checkpoints === undefined) {
    // Without checkpoints the chain is sequential: one task recomputes it whole.
    return { mode: 'full', batches: [[{ start: h0, key, n: record.iterations, expected: result }]], segments: 1 }
  }
  if (sub.checkpoints.length !== m) {
    throw new AogError('AOG_TRACE_MISMATCH', `expected ${m} checkpoints, got ${sub.checkpoints.length}`)
  }
  const cps = sub.checkpoints.map((c) => Buffer.from(c, 'hex'))
  if (!eq(cps[m - 1]!, result)) throw new AogError('AOG_TRACE_MISMATCH', 'the last checkpoint is not result_hash')
  if (sub.trace_hash !== undefined && !eq(traceHash(cps), Buffer.from(sub.trace_hash, 'hex'))) {
    throw new AogError('AOG_TRACE_MISMATCH', 'trace_hash does not match the checkpoints')
  }
  const indices = policy.verify === 'full' ? Array.from({ length: m }, (_, i) => i) : pickSamples(m, policy.samples)
  const segs: Segment[] = indices.map((j) => ({ start: j === 0 ? h0 : cps[j - 1]!, key, n: k, expected: cps[j]! }))
  const nb = Math.max(1, Math.min(parallelism, segs.length))
  const batches: Segment[][] = []
  const per = Math.ceil(segs.length / nb)
  for (let i = 0; i < segs.length; i += per) batches.push(segs.slice(i, i + per))
  return { mode: policy.verify === 'full' || indices.length === m ? 'full' : 'sampled', batches, segments: segs.length }
}
