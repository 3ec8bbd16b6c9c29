/**
 * POST /task (docs/protocol.md section 4), checks in the documented order:
 *   1. identity (resolved before the handler) and the rate limit (429)
 *   2. body well formed (400/413/415), fingerprint is the caller's (403)
 *   3. atomic claim (404/409)  4. deadline (410)  5. plausibility (422)
 *   6. result: checkpoints shape, then recomputation in the pool (422)  7. attestation (403)
 * A pass is recorded with its grant (section 7) in one store call.
 * The rate limit is taken by the same store call as the claim; a request that fails at step 2
 * never reaches the claim, so it takes its token with a bare `take` first, and a 429 still wins.
 * With a store that can tell at once (memory: `Store.limited`), an identity with an empty bucket
 * is refused before its body is read, so a flood of submissions from it costs no parsing.
 */
import { AogError, PoolBusyError } from '../errors.js'
import { readJsonBody } from '../http/body.js'
import { jsonHeaders, rateHeaderList } from '../http/reply.js'
import { BindStatus, ConsumeStatus, TakeStatus, type BucketSpec, type RateState } from '../stores/store.js'
import { checkPlausible, planVerification, sameHex } from '../verification/policy.js'
import { checkTaskBody, type TaskBody, type TaskResponse } from '../protocol/schemas.js'
import { rateLimited, replayedIdentity, type GateParts, type Handler, type RequestContext } from './context.js'

/**
 * Take a token, then throw `err` (or the 429 when the bucket is empty). `err` as a bucket state:
 * the request came while the bucket was empty, so its answer is that 429 even if a token came in
 * between and was taken.
 */
async function refuse (ctx: RequestContext, parts: GateParts, rate: BucketSpec, err: AogError | RateState): Promise<never> {
  // A body refused for its size was not read: whichever refusal is answered, the connection
  // cannot be reused.
  if (err instanceof AogError && err.status === 413) ctx.res.shouldKeepAlive = false
  const t = await parts.store.take({ fingerprint: ctx.identity.fingerprint, rate, once: ctx.once })
  if (t.status === TakeStatus.REPLAYED) throw replayedIdentity(ctx)
  if (t.status === TakeStatus.RATE_LIMITED) throw rateLimited(t.rate, rate.perSecond)
  throw err instanceof AogError ? err : rateLimited(err, rate.perSecond)
}

export const postTask: Handler = async (ctx, parts) => {
  const { config, store, pool, metrics } = parts
  const rate = { burst: config.rateBurst, perSecond: config.ratePerSecond }
  const F = ctx.identity.fingerprint

  // Step 1 before the body, where it costs nothing. Only a body of declared length within the
  // limit is left unread: node reads and drops it after the answer, and the connection stays
  // usable. Any other body (chunked, oversized) goes the usual way. refuse() takes the token and,
  // when the token is taken, records the forwarded once-key, as for every refusal (a 429 or a
  // replay records none).
  const length = ctx.req.headers['content-length']
  if (store.limited !== undefined && length !== undefined && Number(length) <= config.maxBodyBytes) {
    const empty = store.limited(F, rate)
    if (empty !== undefined) return refuse(ctx, parts, rate, empty)
  }

  // Step 2: the body.
  let body: TaskBody
  try {
    const raw = await readJsonBody(ctx.req, config.maxBodyBytes)
    const checked = checkTaskBody(raw)
    if (!checked.ok) throw new AogError('AOG_BAD_REQUEST', checked.reason)
    body = checked.body
    if (config.requireCheckpoints && body.checkpoints === undefined) throw new AogError('AOG_BAD_REQUEST', 'checkpoints are required by this gate')
    if (config.requireAttestation && body.attestation === undefined) throw new AogError('AOG_BAD_REQUEST', 'attestation is required by this gate')
  } catch (err) {
    if (!(err instanceof AogError)) throw err
    return refuse(ctx, parts, rate, err)
  }
  if (!sameHex(body.client_fingerprint, F)) {
    return refuse(ctx, parts, rate, new AogError('AOG_FINGERPRINT_MISMATCH', 'client_fingerprint is not the fingerprint of the presented certificate'))
  }

  // Admission to the pool before the claim: a full queue must not burn the agent's nonce.
  const tasks = body.checkpoints === undefined ? 1 : Math.min(pool.size, config.verify === 'full' ? body.checkpoints.length : config.samples)
  if (!pool.tryReserve(tasks)) {
    return refuse(ctx, parts, rate, new AogError('AOG_OVERLOADED', 'verification queue full; try again shortly', { retryAfter: 1 }))
  }
  let reserved = true
  try {
    // Steps 1 (rate limit) and 3 (claim), one atomic store call.
    const c = await store.consume({ fingerprint: F, nonce: body.nonce, rate, once: ctx.once })
    switch (c.status) {
      case ConsumeStatus.REPLAYED: throw replayedIdentity(ctx)
      case ConsumeStatus.RATE_LIMITED: throw rateLimited(c.rate, rate.perSecond)
      case ConsumeStatus.UNKNOWN: throw new AogError('AOG_UNKNOWN_NONCE', 'no such challenge for this identity')
      case ConsumeStatus.CONSUMED: throw new AogError('AOG_NONCE_CONSUMED', 'this nonce was already submitted')
      // Step 4.
      case ConsumeStatus.EXPIRED: throw new AogError('AOG_DEADLINE_PASSED', 'the challenge deadline has passed')
      case ConsumeStatus.OK: break
    }
    const record = c.challenge
    // Step 5.
    checkPlausible(body.runtime_ms, record, c.now, config)
    // Step 6.
    const plan = planVerification(record, body, config, pool.size)
    if (plan.batches.length < tasks) pool.release(tasks - plan.batches.length)
    else if (plan.batches.length > tasks && !pool.tryReserve(plan.batches.length - tasks)) {
      throw new AogError('AOG_OVERLOADED', 'verification queue full', { retryAfter: 1 })
    }
    reserved = false
    const t0 = process.hrtime.bigint()
    const v = await pool.verify(plan.batches, true).catch((err: unknown) => {
      // After the claim the nonce is spent: unlike AOG_OVERLOADED, retrying this body cannot pass.
      if (!(err instanceof PoolBusyError)) throw err
      throw new AogError('AOG_VERIFICATION_ABORTED', `verification did not complete (${err.reason}); this nonce is spent: fetch a new challenge`, { retryAfter: 1, cause: err })
    })
    metrics.verificationDuration.observe({ mode: plan.mode, result: v.ok ? 'ok' : 'wrong' }, Number(process.hrtime.bigint() - t0) / 1e9)
    if (!v.ok) throw new AogError('AOG_WRONG_RESULT', 'the chain does not verify')
    // Step 7. The pass and the attestation's jti are recorded by one store call: a jti seen
    // before records nothing.
    const attested = await parts.attest(body.attestation, F, body.nonce)
    const bound = await store.bind({ fingerprint: F, nonce: body.nonce, grant: { ttlMs: config.grantTtlSeconds * 1000, maxRequests: config.grantMaxRequests }, once: attested?.once })
    if (bound.status === BindStatus.REPLAYED) {
      parts.attest.record(attested?.issuer ?? 'unknown', 'rejected', 'replayed')
      throw new AogError('AOG_ATTESTATION_INVALID', 'attestation already used')
    }
    if (attested !== undefined) parts.attest.record(attested.issuer, 'accepted', 'ok')
    const { grant } = bound
    metrics.grantsIssued.inc()
    const res: TaskResponse = {
      status: 'accepted',
      nonce: body.nonce,
      verification: plan.mode,
      elapsed_ms: c.now - record.issuedAt,
      grant: { expires_at: grant.expiresAt, requests: grant.requests },
    }
    ctx.outcome = 'ok'
    metrics.submissions.inc({ outcome: 'accepted', reason: 'ok' })
    const text = JSON.stringify(res)
    ctx.send(200, jsonHeaders(text, rateHeaderList(c.rate, rate.perSecond)), text)
  } finally {
    if (reserved) pool.release(tasks)
  }
}
