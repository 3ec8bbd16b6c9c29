/** GET /challenge (PROTOCOL.md section 2): one store call that takes a token and creates the challenge. */
import { AogError } from '../errors.js'
import { rateHeaders, sendJsonText } from '../http/reply.js'
import { IssueStatus, type ChallengeRecord, type IssueResult } from '../stores/store.js'
import { ALGORITHM } from '../challenge/chain.js'
import { rateLimited, replayedIdentity, type GateParts, type Handler, type RequestContext } from './context.js'

export const getChallenge: Handler = (ctx, parts) => {
  const { config, store, random } = parts
  const r = store.issue({
    fingerprint: ctx.identity.fingerprint,
    rate: { burst: config.rateBurst, perSecond: config.ratePerSecond },
    nonce: random.base64url(16),
    seed: random.hex(32),
    iterations: config.iterations,
    checkpointInterval: config.checkpointInterval,
    deadlineMs: config.deadlineMs,
    graceMs: config.graceMs,
    once: ctx.once,
  })
  // The memory store answers at once: no promise, no microtask on the hot path.
  if (r instanceof Promise) return r.then((x) => { answer(ctx, parts, x) })
  answer(ctx, parts, r)
  return undefined
}

function answer (ctx: RequestContext, { config, issued, refuse }: GateParts, r: IssueResult): void {
  switch (r.status) {
    case IssueStatus.REPLAYED: return refuse(ctx, replayedIdentity())
    case IssueStatus.RATE_LIMITED: return refuse(ctx, rateLimited(r.rate, config.ratePerSecond))
    case IssueStatus.FULL: return refuse(ctx, new AogError('AOG_OVERLOADED', 'too many live challenges; try again shortly', { retryAfter: 1 }))
    case IssueStatus.OK: break
  }
  issued.inc()
  ctx.outcome = 'ok'
  sendJsonText(ctx.res, 200, challengeJson(r.challenge), rateHeaders(r.rate, config.ratePerSecond), true)
}

/** String(x), remembering the last answer (a cache of a pure conversion, not gate state). */
function lastText (): (x: number) => string {
  let last = Number.NaN
  let text = ''
  return (x) => {
    if (x !== last) {
      last = x
      text = String(x)
    }
    return text
  }
}
// Issue times repeat within a millisecond, iteration counts within a configuration; times past
// 2^31 ms are doubles, whose conversion (shortest round-trip digits) costs ~1,400 instructions.
const issuedText = lastText()
const deadlineText = lastText()
const iterationsText = lastText()
const intervalText = lastText()

/**
 * The GET /challenge body (a ChallengeResponse), written directly: the bytes JSON.stringify gives
 * for the same object (a test compares them), without building the object. Every field is one the
 * gate made itself: a base64url nonce, a hex seed, integers and the algorithm name, all ASCII.
 */
export function challengeJson (c: ChallengeRecord): string {
  return `{"nonce":"${c.nonce}","seed":"${c.seed}","iterations":${iterationsText(c.iterations)},"checkpoint_interval":${intervalText(c.checkpointInterval)},"algorithm":"${ALGORITHM}","issued_at":${issuedText(c.issuedAt)},"deadline_ts":${deadlineText(c.deadline)}}`
}
