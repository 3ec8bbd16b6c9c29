/**
 * The precomputation attack on sampled verification (issue 17; docs/security.md). Under
 * sha256-chain-v1 each link was SHA-256 of the previous digest alone, so one chain computed once
 * from any start value was consistent at every segment but the first, and sampling accepted it for
 * any challenge and any identity with probability 1 - S/m. With sha256-chain-v2 every link is keyed
 * by the challenge: such reused chains, and chains computed for another identity, must never pass.
 * The defaults' shape m = 64, S = 8 is kept, with short segments so that hundreds of tries are cheap.
 */
import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { startGate } from '../helpers/gate.js'
import { REDIS_URL, requireRedis } from '../helpers/redis.js'
import { outcome } from '../helpers/outcome.js'
import { getChallenge, solve, submitTask, type TaskBody } from '../../lib/client/agent.js'
import { chainKey, traceHash } from '../../lib/chain/chain.js'
import type { Config } from '../../lib/config.js'

await requireRedis()

const SHAPE = { iterations: 64 * 64, checkpointInterval: 64, samples: 8, verify: 'sampled' as const, rateBurst: 100_000, ratePerSecond: 100_000 }
const TRIES = 200

/** m checkpoints of k links each from `start`, with `link` (the attacker's precomputed chain). */
function precomputed (start: Buffer, m: number, k: number, link: (d: Buffer) => Buffer): Buffer[] {
  const out: Buffer[] = []
  let d = start
  for (let j = 0; j < m; j++) {
    for (let i = 0; i < k; i++) d = link(d)
    out.push(d)
  }
  return out
}

function bodyOf (nonce: string, fingerprint: string, cps: Buffer[]): TaskBody {
  return {
    nonce,
    result_hash: cps[cps.length - 1]!.toString('hex'),
    runtime_ms: 1,
    client_fingerprint: fingerprint,
    trace_hash: traceHash(cps).toString('hex'),
    checkpoints: cps.map((c) => c.toString('hex')),
  }
}

async function attack (t: Test, overrides: Partial<Config>): Promise<void> {
  const g = await startGate(t, { ...SHAPE, ...overrides })
  const agent = g.agent()
  const other = g.agent('agent2')
  const m = SHAPE.iterations / SHAPE.checkpointInterval
  const k = SHAPE.checkpointInterval
  // 1. v1's forgery: one unkeyed chain from a random start, computed once, sent for every challenge.
  const unkeyed = precomputed(randomBytes(32), m, k, (d) => createHash('sha256').update(d).digest())
  // 2. One keyed chain computed once under some key (e.g. an earlier challenge's), reused.
  const oldKey = chainKey(randomBytes(32))
  const keyedOnce = precomputed(randomBytes(32), m, k, (d) => createHash('sha256').update(Buffer.from(d.map((x, i) => x ^ oldKey[i]!))).digest())
  // 3. A whole honest solution of one earlier challenge, replayed against new ones.
  const first = await getChallenge(agent)
  const honestOld = solve(first, agent.fingerprint)
  t.equal(await outcome(submitTask(agent, honestOld)), 'accepted', 'the honest solution of its own challenge passes')
  const reusedCps = honestOld.checkpoints!.map((c) => Buffer.from(c, 'hex'))

  const counts: Record<string, Record<string, number>> = {}
  const count = (kind: string, o: string): void => { (counts[kind] ??= {})[o] = (counts[kind][o] ?? 0) + 1 }
  for (let i = 0; i < TRIES; i++) {
    const c = await getChallenge(agent)
    const kind = ['unkeyed chain', 'keyed chain reused', 'old solution reused'][i % 3]!
    const cps = i % 3 === 0 ? unkeyed : i % 3 === 1 ? keyedOnce : reusedCps
    count(kind, await outcome(submitTask(agent, bodyOf(c.nonce, agent.fingerprint, cps))))
  }
  // 4. A chain honestly computed for another identity's F, submitted by this identity (its own
  //    fingerprint in the body, so that only the chain can give it away).
  for (let i = 0; i < 100; i++) {
    const c = await getChallenge(agent)
    const forOther = solve(c, other.fingerprint)
    count('chain for another F', await outcome(submitTask(agent, { ...forOther, client_fingerprint: agent.fingerprint })))
  }
  t.comment(`outcomes: ${JSON.stringify(counts)}`)
  for (const [kind, outcomes] of Object.entries(counts)) {
    t.equal(outcomes.accepted ?? 0, 0, `${kind}: 0 accepted`)
    t.same(Object.keys(outcomes), ['422 AOG_WRONG_RESULT'], `${kind}: every try refused as a wrong result`)
  }
  const total = Object.values(counts).reduce((n, o) => n + Object.values(o).reduce((a, b) => a + b, 0), 0)
  t.equal(total, TRIES + 100, 'every try was answered')
  // The gate still serves honest agents afterwards.
  t.equal(await outcome(submitTask(agent, solve(await getChallenge(agent), agent.fingerprint))), 'accepted')
}

t.test('memory store: precomputed and foreign chains are never accepted', async (t) => {
  await attack(t, {})
})

t.test('Redis store: precomputed and foreign chains are never accepted', async (t) => {
  await attack(t, { store: 'redis', redisUrl: REDIS_URL, redisPrefix: `aogpc:${randomBytes(3).toString('hex')}:` })
})
