/** GET /challenge (docs/protocol.md section 2): one store call that takes a token and creates the challenge. */
import { AogError } from '../errors.js'
import { jsonHeaders, rateHeaderList } from '../http/reply.js'
import { wholeText } from '../whole-text.js'
import { IssueStatus, type ChallengeRecord, type IssueResult } from '../stores/store.js'
import { ALGORITHM } from '../protocol/constants.js'
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
  // The memory store answers at once: no promise on the path that matters (docs/decisions/request-path-caches.md).
  if (r instanceof Promise) return r.then((x) => { answer(ctx, parts, x) })
  answer(ctx, parts, r)
  return undefined
}

function answer (ctx: RequestContext, { config, store, metrics }: GateParts, r: IssueResult): void {
  switch (r.status) {
    case IssueStatus.REPLAYED: throw replayedIdentity(ctx)
    case IssueStatus.RATE_LIMITED: throw rateLimited(r.rate, config.ratePerSecond)
    case IssueStatus.FULL: throw new AogError('AOG_OVERLOADED', 'too many live challenges; try again shortly', { retryAfter: 1 })
    case IssueStatus.OK: break
  }
  metrics.challengesIssued.inc({ store: store.kind })
  ctx.outcome = 'ok'
  const text = challengeJson(r.challenge)
  // The body is ASCII: its length is its byte length.
  ctx.send(200, jsonHeaders(text, rateHeaderList(r.rate, config.ratePerSecond), text.length), text)
}

/**
 * The GET /challenge body (a ChallengeResponse, docs/protocol.md section 2) as JSON.stringify
 * writes it (a test compares them). Written as a template: every value is one the gate made
 * (base64url, hex, integers, the algorithm name), so nothing needs escaping, and this costs a
 * third of JSON.stringify's time on the request path (docs/decisions/request-path-caches.md).
 */
export function challengeJson (c: ChallengeRecord): string {
  return `{"nonce":"${c.nonce}","seed":"${c.seed}","iterations":${c.iterations},"checkpoint_interval":${c.checkpointInterval},"algorithm":"${ALGORITHM}","issued_at":${wholeText(c.issuedAt)},"deadline_ts":${wholeText(c.deadline)}}`
}
