/**
 * The wire schemas of docs/protocol.md sections 2 and 4 (TypeBox), shared by the gate's handlers and
 * the agent library. Request bodies are checked with TypeBox's own compiler:
 * as fast as ajv on this shape and with no second schema language on the hot path (ajv is kept
 * for configuration, where defaults and coercion matter).
 */
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ALGORITHM, HEX64_SOURCE, MAX_ATTESTATION, MAX_CHECKPOINTS, NONCE_SOURCE } from './constants.js'
import { ERRORS, type ErrorCode } from '../errors.js'

const Hex64 = Type.String({ pattern: HEX64_SOURCE, description: '64 lowercase hex characters' })
/** A 64-hex field with its own description. */
const hex64 = (description: string) => Type.String({ pattern: HEX64_SOURCE, description: `${description} (64 lowercase hex characters)` })
/** A nonce field: 22 base64url characters (16 bytes), with its own description. */
const nonce = (description: string) => Type.String({ pattern: NONCE_SOURCE, description: `${description} (22 base64url characters, 16 bytes)` })

// Titles and descriptions are documentation only (lib/openapi.ts publishes these schemas as they
// are): none of them changes what validates.
export const TaskBody = Type.Object({
  nonce: nonce('The nonce of the challenge being answered'),
  result_hash: hex64('The last link of the chain'),
  runtime_ms: Type.Number({ minimum: 0, maximum: 86_400_000, description: 'The agent\'s own measure of its computation (ms); checked for plausibility.' }),
  client_fingerprint: hex64('SHA-256 of the DER of the client certificate presented on this connection'),
  trace_hash: Type.Optional(hex64('SHA-256 of the concatenated checkpoints (bytes)')),
  checkpoints: Type.Optional(Type.Array(Hex64, { minItems: 1, maxItems: MAX_CHECKPOINTS, description: 'Every k-th link of the chain, in order (N/k of them).' })),
  attestation: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_ATTESTATION, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*$', description: 'An attestation JWT (compact JWS), when the gate checks attestations.' })),
}, { additionalProperties: false, title: 'TaskBody', description: 'POST /task: the solved challenge (docs/protocol.md section 4).' })

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
  nonce: nonce('Single-use challenge id, bound to the caller\'s identity'),
  seed: hex64('Random seed of the chain'),
  iterations: Type.Integer({ minimum: 1, description: 'Chain length N.' }),
  checkpoint_interval: Type.Integer({ minimum: 1, description: 'Checkpoint interval k (divides N).' }),
  algorithm: Type.Literal(ALGORITHM, { description: 'The computation (docs/protocol.md section 3).' }),
  issued_at: Type.Integer({ description: 'Issue time, epoch ms (store time).' }),
  deadline_ts: Type.Integer({ description: 'Deadline of the submission, epoch ms (store time).' }),
}, { title: 'ChallengeResponse', description: 'GET /challenge: a one-time compute challenge (docs/protocol.md section 2).' })

export type ChallengeResponse = Static<typeof ChallengeResponse>

/** docs/protocol.md section 7: what a pass grants (the `grant` of a TaskResponse). */
export const Grant = Type.Object({
  expires_at: Type.Integer({ description: 'Grant expiry, epoch ms (store time).' }),
  requests: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'Protected requests left; null when unlimited.' }),
}, { title: 'Grant', description: 'Access to protected requests for this identity, until expires_at (docs/protocol.md section 7).' })

export type Grant = Static<typeof Grant>

export const TaskResponse = Type.Object({
  status: Type.Literal('accepted'),
  nonce: nonce('The nonce that passed (now consumed)'),
  verification: Type.Union([Type.Literal('full'), Type.Literal('sampled')], { description: 'How the chain was verified.' }),
  elapsed_ms: Type.Number({ description: 'Time from issue to this submission (ms, store time).' }),
  grant: Grant,
}, { title: 'TaskResponse', description: 'POST /task accepted: the pass, and the grant it opened.' })

export type TaskResponse = Static<typeof TaskResponse>

/** Every public error code (lib/errors.ts), in the table's order. */
export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[]

/**
 * The body of every refusal, `application/problem+json` (RFC 9457; docs/protocol.md section 5), as
 * lib/http/reply.ts writes it. `status` is the HTTP status of the answer: the code's own, but for
 * GET /auth, which answers 401 or 403 and carries the code's own status in X-AOG-Status, and 417
 * (an Expect other than 100-continue, code AOG_BAD_REQUEST).
 */
export const Problem = Type.Object({
  type: Type.String({ pattern: '^urn:aog:problem:[a-z-]+$', description: 'urn:aog:problem: and the code in lowercase, with - for _.' }),
  title: Type.String({ description: 'The code\'s title (lib/errors.ts).' }),
  status: Type.Integer({ minimum: 400, maximum: 599, description: 'The HTTP status of this answer.' }),
  detail: Type.String({ description: 'What went wrong, safe to show; not stable: match on code.' }),
  code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c)), { description: 'The stable error code.' }),
  instance: Type.Optional(Type.String()),
}, { additionalProperties: false, title: 'Problem', description: 'A refusal (RFC 9457 problem details) with a stable AOG code.' })

export type Problem = Static<typeof Problem>

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
