/**
 * The wire schemas of docs/protocol.md sections 2 and 4 (TypeBox), shared by the gate's handlers and
 * the agent library. Request bodies are checked with TypeBox's own compiler:
 * as fast as ajv on this shape and with no second schema language on the hot path (ajv is kept
 * for configuration, where defaults and coercion matter).
 */
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ALGORITHM, HEX64_SOURCE, MAX_ATTESTATION, MAX_CHECKPOINTS, NONCE_SOURCE } from './constants.js'

const Hex64 = Type.String({ pattern: HEX64_SOURCE, description: '64 lowercase hex characters' })
const Nonce = Type.String({ pattern: NONCE_SOURCE, description: '22 base64url characters (16 bytes)' })

export const TaskBody = Type.Object({
  nonce: Nonce,
  result_hash: Hex64,
  runtime_ms: Type.Number({ minimum: 0, maximum: 86_400_000 }),
  client_fingerprint: Hex64,
  trace_hash: Type.Optional(Hex64),
  checkpoints: Type.Optional(Type.Array(Hex64, { minItems: 1, maxItems: MAX_CHECKPOINTS })),
  attestation: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_ATTESTATION, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*$' })),
}, { additionalProperties: false })

export type TaskBody = Static<typeof TaskBody>

/**
 * Bytes of the largest honest POST /task body for m checkpoints: every field at its longest,
 * written with the spaces of Python's default json.dumps (", " and ": "), which agents use.
 */
export function largestTaskBody (m: number, attestation: boolean): number {
  const body = {
    nonce: 'A'.repeat(22),
    result_hash: 'a'.repeat(64),
    runtime_ms: 86399999.999,
    client_fingerprint: 'a'.repeat(64),
    trace_hash: 'a'.repeat(64),
    checkpoints: Array.from({ length: m }, () => 'a'.repeat(64)),
    ...(attestation ? { attestation: 'a'.repeat(MAX_ATTESTATION) } : {}),
  }
  const compact = JSON.stringify(body)
  // One space after every ':' and ',' outside the strings (none of them contains either).
  return Buffer.byteLength(compact) + (compact.match(/[:,]/g)?.length ?? 0)
}

export const ChallengeResponse = Type.Object({
  nonce: Nonce,
  seed: Hex64,
  iterations: Type.Integer({ minimum: 1 }),
  checkpoint_interval: Type.Integer({ minimum: 1 }),
  algorithm: Type.Literal(ALGORITHM),
  issued_at: Type.Integer(),
  deadline_ts: Type.Integer(),
})

export type ChallengeResponse = Static<typeof ChallengeResponse>

export const TaskResponse = Type.Object({
  status: Type.Literal('accepted'),
  nonce: Nonce,
  verification: Type.Union([Type.Literal('full'), Type.Literal('sampled')]),
  elapsed_ms: Type.Number(),
  /** docs/protocol.md section 7: what the pass grants. */
  grant: Type.Object({
    expires_at: Type.Integer({ description: 'Grant expiry, epoch ms (store time).' }),
    requests: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'Protected requests left; null when unlimited.' }),
  }),
})

export type TaskResponse = Static<typeof TaskResponse>

const taskCheck = TypeCompiler.Compile(TaskBody)
const challengeCheck = TypeCompiler.Compile(ChallengeResponse)

/** Validate a POST /task body; returns a safe one-line reason when invalid. */
export function checkTaskBody (v: unknown): { ok: true, body: TaskBody } | { ok: false, reason: string } {
  if (taskCheck.Check(v)) return { ok: true, body: v }
  const e = taskCheck.Errors(v).First()
  const where = e === undefined ? '' : (e.path === '' ? 'body' : e.path.slice(1))
  return { ok: false, reason: e === undefined ? 'invalid body' : `${where}: ${e.message}` }
}

/** Validate a GET /challenge response (used by the agent library). */
export function isChallengeResponse (v: unknown): v is ChallengeResponse {
  return challengeCheck.Check(v)
}
