import t from 'tap'
import { randomBytes } from 'node:crypto'
import { checkPlausible, pickSamples, planVerification, type Policy } from '../../../lib/verification/policy.js'
import { solveChain, traceHash } from '../../../lib/chain/chain.js'
import { VerifyPool } from '../../../lib/verification/pool.js'
import { AogError } from '../../../lib/errors.js'
import type { ChallengeRecord } from '../../../lib/stores/store.js'

const policy: Policy = { verify: 'sampled', samples: 8, minNsPerIteration: 100, runtimeToleranceMs: 50 }

function record (iterations: number, k: number): ChallengeRecord {
  return {
    nonce: randomBytes(16).toString('base64url'),
    seed: randomBytes(32).toString('hex'),
    fingerprint: randomBytes(32).toString('hex'),
    iterations,
    checkpointInterval: k,
    issuedAt: 1_000_000,
    deadline: 1_010_000,
  }
}

function codeOf (fn: () => void): string | undefined {
  try { fn() } catch (err) { return err instanceof AogError ? err.code : 'OTHER' }
  return undefined
}

t.test('plausibility: runtime within the observed elapsed time, elapsed above the floor', async (t) => {
  const r = record(1_000_000, 1000) // floor: 1e6 x 100 ns = 100 ms
  t.equal(codeOf(() => checkPlausible(150, r, r.issuedAt + 200, policy)), undefined)
  t.equal(codeOf(() => checkPlausible(240, r, r.issuedAt + 200, policy)), undefined, 'within tolerance')
  t.equal(codeOf(() => checkPlausible(260, r, r.issuedAt + 200, policy)), 'AOG_RUNTIME_IMPLAUSIBLE', 'claims more than elapsed')
  t.equal(codeOf(() => checkPlausible(10, r, r.issuedAt + 99, policy)), 'AOG_RUNTIME_IMPLAUSIBLE', 'faster than the floor')
})

t.test('samples are distinct, sorted, in range, and cover every index over many draws', async (t) => {
  const seen = new Set<number>()
  for (let i = 0; i < 500; i++) {
    const s = pickSamples(64, 8)
    t.equal(new Set(s).size, 8)
    t.same(s, [...s].sort((a, b) => a - b))
    for (const x of s) { t.ok(x >= 0 && x < 64); seen.add(x) }
  }
  t.equal(seen.size, 64)
  t.same(pickSamples(4, 8), [0, 1, 2, 3], 'S is capped at m')
})

t.test('the plan splits segments over workers and chains them from h0', async (t) => {
  const r = record(1024, 64)
  const s = solveChain({ ...r, checkpoint_interval: r.checkpointInterval }, r.fingerprint)
  const full = planVerification(r, { nonce: r.nonce, ...s }, { ...policy, verify: 'full' }, 3)
  t.equal(full.mode, 'full')
  t.equal(full.segments, 16)
  t.equal(full.batches.length, 3)
  t.equal(full.batches.flat().length, 16)
  const sampled = planVerification(r, { nonce: r.nonce, ...s }, policy, 2)
  t.equal(sampled.mode, 'sampled')
  t.equal(sampled.segments, 8)
  const bare = planVerification(r, { nonce: r.nonce, result_hash: s.result_hash }, policy, 2)
  t.match(bare, { mode: 'full', segments: 1 })
  t.equal(bare.batches[0]![0]!.n, 1024)
})

/** Exact catch probability of S distinct samples when `bad` of `m` segments are fabricated. */
function catchExact (m: number, bad: number, s: number): number {
  let miss = 1
  for (let i = 0; i < s; i++) miss *= (m - bad - i) / (m - i)
  return 1 - miss
}

t.test('sampled mode catches fabricated checkpoints at the rate 1-(1-f)^S predicts', async (t) => {
  const pool = new VerifyPool({ size: 2, maxQueue: 64, taskTimeoutMs: 10_000 })
  t.teardown(() => pool.close())
  await pool.ready()
  const r = record(1024, 16) // m = 64
  const honest = solveChain({ ...r, checkpoint_interval: r.checkpointInterval }, r.fingerprint)
  const m = 64
  // The second half fabricated (f = 0.5), self-consistent result and trace hash.
  const fake = honest.checkpoints.map((c, i) => i < m / 2 ? c : randomBytes(32).toString('hex'))
  const sub = { nonce: r.nonce, checkpoints: fake, result_hash: fake[m - 1]!, trace_hash: traceHash(fake.map((c) => Buffer.from(c, 'hex'))).toString('hex') }
  for (const S of [1, 2, 4]) {
    const tries = 1500
    let caught = 0
    for (let i = 0; i < tries; i++) {
      const plan = planVerification(r, sub, { ...policy, samples: S }, 2)
      if (!(await pool.verify(plan.batches, false)).ok) caught++
    }
    const rate = caught / tries
    const predicted = 1 - (1 - 0.5) ** S
    const exact = catchExact(m, m / 2, S) // distinct samples catch slightly more often than independent draws
    const sd = Math.sqrt(exact * (1 - exact) / tries)
    t.ok(Math.abs(rate - exact) <= 4.5 * sd, `S=${S}: measured ${rate.toFixed(4)}, exact ${exact.toFixed(4)} (4.5 sd = ${(4.5 * sd).toFixed(4)})`)
    t.ok(Math.abs(rate - predicted) <= 4.5 * sd + (exact - predicted), `S=${S}: measured ${rate.toFixed(4)} matches 1-(1-f)^S = ${predicted.toFixed(4)}`)
  }
  // S = m always catches it.
  for (let i = 0; i < 20; i++) {
    const plan = planVerification(r, sub, { ...policy, samples: m }, 2)
    t.equal(plan.mode, 'full')
    t.notOk((await pool.verify(plan.batches, false)).ok)
  }
})

t.test('an honest submission always passes sampling', async (t) => {
  const pool = new VerifyPool({ size: 2, maxQueue: 64, taskTimeoutMs: 10_000 })
  t.teardown(() => pool.close())
  await pool.ready()
  const r = record(1024, 16)
  const s = solveChain({ ...r, checkpoint_interval: r.checkpointInterval }, r.fingerprint)
  for (let i = 0; i < 50; i++) t.ok((await pool.verify(planVerification(r, { nonce: r.nonce, ...s }, policy, 2).batches, false)).ok)
})
