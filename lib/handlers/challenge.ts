/** GET /challenge (docs/protocol.md section 2): one store call that takes a token and creates the challenge. */
import { AogError } from '../errors.js'
import { jsonHeaders, rateHeaders } from '../http/reply.js'
import { IssueStatus, type ChallengeRecord } from '../stores/store.js'
import { ALGORITHM } from '../protocol/constants.js'
import type { ChallengeResponse } from '../protocol/schemas.js'
import { rateLimited, replayedIdentity, type Handler } from './context.js'

export const getChallenge: Handler = async (ctx, { config, store, random, metrics }) => {
  const r = await store.issue({
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
  switch (r.status) {
    case IssueStatus.REPLAYED: throw replayedIdentity()
    case IssueStatus.RATE_LIMITED: throw rateLimited(r.rate, config.ratePerSecond)
    case IssueStatus.FULL: throw new AogError('AOG_OVERLOADED', 'too many live challenges; try again shortly', { retryAfter: 1 })
    case IssueStatus.OK: break
  }
  metrics.challengesIssued.inc({ store: store.kind })
  ctx.outcome = 'ok'
  const text = challengeJson(r.challenge)
  ctx.send(200, jsonHeaders(text, rateHeaders(r.rate, config.ratePerSecond)), text)
}

/** The GET /challenge body (a ChallengeResponse, docs/protocol.md section 2). */
export function challengeJson (c: ChallengeRecord): string {
  const body: ChallengeResponse = {
    nonce: c.nonce,
    seed: c.seed,
    iterations: c.iterations,
    checkpoint_interval: c.checkpointInterval,
    algorithm: ALGORITHM,
    issued_at: c.issuedAt,
    deadline_ts: c.deadline,
  }
  return JSON.stringify(body)
}
