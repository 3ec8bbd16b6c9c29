/** GET /challenge (PROTOCOL.md section 2): one store call that takes a token and creates the challenge. */
import { AogError } from '../errors.js'
import { jsonRatedHeaders } from '../http/reply.js'
import { IssueStatus, type ChallengeRecord, type IssueResult } from '../stores/store.js'
import { ALGORITHM } from '../chain/chain.js'
import { rateLimited, replayedIdentity, type GateParts, type Handler, type RequestContext } from './context.js'

export const getChallenge: Handler = (ctx, parts) => {
  const { config, store, random } = parts
  const r = store.issue({
    fingerprint: ctx.identity.fingerprint,
    rate: { burst: config.rateBurst, perSecond: config.ratePerSecond },
    nonce: random.nonce(),
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
  const text = challengeJson(r.challenge)
  ctx.send(200, jsonRatedHeaders(text, r.rate, config.ratePerSecond), text)
}

// The body's fixed middle (iterations, checkpoint interval and algorithm: the same for every
// challenge of a configuration) and its times (the same for every challenge issued in the same
// millisecond), each kept until what it holds changes: a body is then five concatenations, not
// fifteen. (Times past 2^31 ms are doubles, whose conversion costs ~1,400 instructions.)
let middle = { iterations: Number.NaN, interval: Number.NaN, text: '' }
let times = { issuedAt: Number.NaN, deadline: Number.NaN, text: '' }

/**
 * The GET /challenge body (a ChallengeResponse), written directly: the bytes JSON.stringify gives
 * for the same object (a test compares them), without building the object. Every field is one the
 * gate made itself: a base64url nonce, a hex seed, integers and the algorithm name, all ASCII.
 */
export function challengeJson (c: ChallengeRecord): string {
  if (c.iterations !== middle.iterations || c.checkpointInterval !== middle.interval) {
    middle = { iterations: c.iterations, interval: c.checkpointInterval, text: `","iterations":${c.iterations},"checkpoint_interval":${c.checkpointInterval},"algorithm":"${ALGORITHM}","issued_at":` }
  }
  if (c.issuedAt !== times.issuedAt || c.deadline !== times.deadline) {
    times = { issuedAt: c.issuedAt, deadline: c.deadline, text: `${c.issuedAt},"deadline_ts":${c.deadline}}` }
  }
  return '{"nonce":"' + c.nonce + '","seed":"' + c.seed + middle.text + times.text
}
