/**
 * bench:verify — CPU time of solving (the agent) against CPU time of verifying (the gate, all
 * threads: process.cpuUsage covers the workers) for full, sampled and no-checkpoint verification at
 * several chain sizes, with m = 64 checkpoints. The ratio is what a verification costs relative to
 * the solve it checks; the target with the defaults (m = 64, S = 8) is at most 1/6.
 * Before the timed rounds of each size, `--warm` untimed verifications per mode run the planning
 * code into the JIT, as in a gate that has been serving (the first call of planVerification alone
 * took 3.5 ms of CPU, interpreted).
 *   npm run bench:verify [-- --rounds 5 --warm 10 --workers 2]
 */
import { randomBytes } from 'node:crypto'
import { solveChain } from '../lib/chain/chain.js'
import { selectChain } from '../lib/chain/select.js'
import { planVerification, type Policy } from '../lib/verification/policy.js'
import { VerifyPool } from '../lib/verification/pool.js'
import type { ChallengeRecord } from '../lib/stores/store.js'
import { benchArgs } from './args.js'
import { machine, median, table } from './util.js'

const values = benchArgs('bench:verify', 'CPU per solve (the agent) against CPU per verification (the gate, workers included) in sampled, full and no-checkpoint modes at several chain sizes, m = 64.', {
  rounds: { type: 'number', default: 5, help: 'rounds per size (the median is shown)' },
  warm: { type: 'number', default: 10, min: 0, help: 'untimed verifications per size and mode first, so that the timed ones run warm code, as in a gate that has been serving' },
  workers: { type: 'number', default: 2, help: 'verification worker threads' },
})
const R = values.rounds
const impl = await selectChain()
const pool = new VerifyPool({ size: values.workers, maxQueue: 1024, taskTimeoutMs: 600_000 })
await pool.ready()

const cpuMs = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000
const rows: Array<Record<string, string>> = []
for (const N of [1 << 16, 1 << 18, 1 << 20]) {
  const k = N / 64
  const solve: number[] = []
  const verify: Record<string, number[]> = { 'sampled S=8': [], full: [], 'no checkpoints': [] }
  for (let r = -1; r < R; r++) {
    // Round -1 is the warm-up: a solve and `--warm` verifications per mode, none of them timed.
    const rec: ChallengeRecord = { nonce: randomBytes(16).toString('base64url'), seed: randomBytes(32).toString('hex'), fingerprint: randomBytes(32).toString('hex'), iterations: N, checkpointInterval: k, issuedAt: 0, deadline: 1 }
    const c0 = process.cpuUsage()
    const s = solveChain({ ...rec, checkpoint_interval: k }, rec.fingerprint, impl)
    if (r >= 0) solve.push(cpuMs(process.cpuUsage(c0)))
    const cases: Array<[string, Policy['verify'], boolean]> = [['sampled S=8', 'sampled', true], ['full', 'full', true], ['no checkpoints', 'full', false]]
    for (const [name, mode, withCheckpoints] of cases) {
      const sub = withCheckpoints ? { nonce: rec.nonce, ...s } : { nonce: rec.nonce, result_hash: s.result_hash }
      for (let w = r < 0 ? values.warm : 1; w > 0; w--) {
        const v0 = process.cpuUsage()
        const plan = planVerification(rec, sub, { verify: mode, samples: 8, minNsPerIteration: 0, runtimeToleranceMs: 0 }, pool.size)
        const out = await pool.verify(plan.batches, false)
        if (r >= 0) verify[name]!.push(cpuMs(process.cpuUsage(v0)))
        if (!out.ok) throw new Error('an honest solution failed verification')
      }
    }
  }
  const sv = median(solve)
  for (const [name, xs] of Object.entries(verify)) {
    const v = median(xs)
    rows.push({ N: String(N), 'k (m=64)': String(k), mode: name, 'solve CPU ms': sv.toFixed(2), 'verify CPU ms': v.toFixed(2), 'verify / solve': (v / sv).toFixed(3), 'target (<= 1/6 = 0.167)': name === 'sampled S=8' ? (v / sv <= 1 / 6 ? 'met' : 'MISSED') : '' })
  }
}
await pool.close()
console.log(`bench:verify  ${machine()}  chain: ${impl.name}, ${values.workers} workers, median of ${R} after ${values.warm} untimed verifications per size and mode`)
console.log(table(rows))
