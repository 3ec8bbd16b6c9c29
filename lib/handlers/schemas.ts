/**
 * Request and response schemas (TypeBox). Request bodies are checked with TypeBox's own compiler:
 * as fast as ajv on this shape and with no second schema language on the hot path (ajv is kept
 * for configuration, where defaults and coercion matter).
 */
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$', description: '64 lowercase hex characters' })
const Nonce = Type.String({ pattern: '^[A-Za-z0-9_-]{22}$', description: '22 base64url characters (16 bytes)' })

export const TaskBody = Type.Object({
  nonce: Nonce,
  result_hash: Hex64,
  runtime_ms: Type.Number({ minimum: 0, maximum: 86_400_000 }),
  client_fingerprint: Hex64,
  trace_hash: Type.Optional(Hex64),
  checkpoints: Type.Optional(Type.Array(Hex64, { minItems: 1, maxItems: 1024 })),
  attestation: Type.Optional(Type.String({ minLength: 1, maxLength: 16384, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*$' })),
}, { additionalProperties: false })

export type TaskBody = Static<typeof TaskBody>

export const ChallengeResponse = Type.Object({
  nonce: Nonce,
  seed: Hex64,
  iterations: Type.Integer({ minimum: 1 }),
  checkpoint_interval: Type.Integer({ minimum: 1 }),
  algorithm: Type.Literal('sha256-chain-v1'),
  issued_at: Type.Integer(),
  deadline_ts: Type.Integer(),
})

export type ChallengeResponse = Static<typeof ChallengeResponse>

export const TaskResponse = Type.Object({
  status: Type.Literal('accepted'),
  nonce: Nonce,
  verification: Type.Union([Type.Literal('full'), Type.Literal('sampled')]),
  elapsed_ms: Type.Number(),
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
