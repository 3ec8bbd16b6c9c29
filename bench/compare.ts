/**
 * bench:compare — does a change make GET /challenge cheaper? Two builds of the gate, this checkout's
 * and another commit's (built in a temporary git worktree), loaded **at the same time**, each as
 * fast as it answers (or at `--rate`), round after round; the figure is the median of the per-round
 * differences of their CPU time per request. Both servers see the same machine in every round, so
 * the difference holds while the machine's own speed swings by a third between rounds, which a
 * throughput ratio over alternating rounds does not resolve below a few µs
 * (docs/decisions/request-log-line.md). Any non-2xx answer or error makes the run exit 1.
 * `--signed`: both gates run with `--web-bot-auth` and each request is a fresh Web Bot Auth signature
 * (bench/signed.ts) instead of mTLS, for changes to the signed path (docs/decisions/signature-cost.md).
 *   npm run bench:compare -- --ref HEAD~1 [--rounds 8 --duration 5 --connections 16 --rate 0 --path /challenge --signed --gate-args='...']
 */
import autocannon from 'autocannon'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEV, ROOT, splitArgs, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { signedLoad, type SignedLoad } from './signed.js'
import { cpuMs, machine, median, middleHalf, table } from './util.js'

const values = benchArgs('bench:compare', "CPU per request of this checkout's gate against another commit's, both loaded at once: the median of the per-round differences.", {
  ref: { type: 'string', default: 'HEAD', help: 'the commit to compare with (built in a temporary worktree)' },
  rate: { type: 'number', default: 0, min: 0, help: 'requests per second sent to each gate (0: as fast as each answers)' },
  rounds: { type: 'number', default: 8, help: 'rounds (the figure is the median of the per-round differences)' },
  duration: { type: 'number', default: 5, help: 'seconds of each round' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections to each gate' },
  path: { type: 'string', default: '/challenge', help: 'the path to load', check: (v) => v.startsWith('/') ? undefined : 'expected a path starting with /' },
  signed: { type: 'boolean', default: false, help: 'load signed GET /challenge (Web Bot Auth) instead of mTLS; both gates get --web-bot-auth; --path is then ignored' },
  'gate-args': { type: 'string', default: '', help: "gate options for both, e.g. '--workers 1'" },
})
const tlsOptions = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }

/** `ref` checked out and built (tsc) in a temporary worktree sharing this checkout's node_modules. */
function buildRef (ref: string): { root: string, commit: string, remove: () => void } {
  const commit = execFileSync('git', ['rev-parse', '--short', `${ref}^{commit}`], { cwd: ROOT, encoding: 'utf8' }).trim()
  const root = mkdtempSync(join(tmpdir(), 'aog-compare-'))
  execFileSync('git', ['worktree', 'add', '--detach', '--force', root, commit], { cwd: ROOT, stdio: 'ignore' })
  const remove = (): void => {
    try { execFileSync('git', ['worktree', 'remove', '--force', root], { cwd: ROOT, stdio: 'ignore' }) } catch { rmSync(root, { recursive: true, force: true }) }
  }
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'))
  // The build's own type errors (an older commit's tests against newer packages) do not stop tsc emitting.
  try { execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'ignore' }) } catch {}
  if (!existsSync(join(root, 'dist', 'bin', 'aog-server.js'))) {
    remove()
    throw new Error(`${ref} (${commit}) did not build`)
  }
  return { root, commit, remove }
}

interface Round { us: number[], rps: number[], failed: number, late: number }

/** A round of `seconds`; signed, each gate's pool holds twice `expectedRps` requests a second. */
async function round (gates: Child[], seconds: number, expectedRps: number): Promise<Round> {
  const pools: Array<SignedLoad | undefined> = gates.map((g) => values.signed ? signedLoad(`localhost:${g.port}`, 2 * seconds * (values.rate > 0 ? values.rate : expectedRps)) : undefined)
  const c0 = gates.map((g) => cpuMs(g.child.pid))
  const runs = await Promise.all(gates.map(async (g, i) => await autocannon({
    url: `https://localhost:${g.port}${values.path}`,
    connections: values.connections,
    duration: seconds,
    ...(pools[i] === undefined ? { tlsOptions } : { tlsOptions: { ca: tlsOptions.ca }, requests: pools[i].requests }),
    ...(values.rate > 0 ? { overallRate: values.rate } : {}),
  } as autocannon.Options)))
  const c1 = gates.map((g) => cpuMs(g.child.pid))
  return {
    us: gates.map((_g, i) => ((c1[i] ?? NaN) - (c0[i] ?? NaN)) * 1000 / Math.max(1, runs[i]!.requests.total)),
    rps: runs.map((r) => r.requests.average),
    failed: runs.reduce((n, r) => n + r.non2xx + r.errors, 0),
    late: pools.reduce((n, p) => n + (p?.late() ?? 0), 0),
  }
}

const other = buildRef(values.ref)
const gateArgs = [...(values.signed ? ['--web-bot-auth'] : []), ...splitArgs(values['gate-args'])]
let gates: Child[] = []
try {
  gates = [await startGateProcess(gateArgs, other.root), await startGateProcess(gateArgs)]
  let expectedRps = Math.max(...(await round(gates, 2, 10_000)).rps) // warm-up: the JIT settles
  const rounds: Round[] = []
  for (let i = 0; i < values.rounds; i++) {
    rounds.push(await round(gates, values.duration, expectedRps))
    // The fastest round so far: a round after a slow one must not run out of signatures.
    expectedRps = Math.max(expectedRps, ...rounds[i]!.rps)
  }
  const diffs = rounds.map((r) => r.us[1]! - r.us[0]!)
  const d = median(diffs)
  const [lo, hi] = middleHalf(diffs)
  const sameSign = diffs.filter((x) => Math.sign(x) === Math.sign(d)).length
  const failed = rounds.reduce((n, r) => n + r.failed, 0)
  const late = rounds.reduce((n, r) => n + r.late, 0)
  console.log(`bench:compare  ${machine()}  ${values.signed ? 'signed (Web Bot Auth) ' : ''}${values.path} ${values.rate > 0 ? `at ${values.rate}/s` : 'as fast as each answers'} to each gate, ${values.connections} connections each, ${values.rounds} rounds of ${values.duration} s, both loaded at once`)
  console.log(table(rounds.map((r, i) => ({ round: i + 1, [`${other.commit} CPU us/req`]: r.us[0]!.toFixed(1), 'this checkout CPU us/req': r.us[1]!.toFixed(1), difference: diffs[i]!.toFixed(1) }))))
  console.log(`this checkout against ${values.ref} (${other.commit}): ${d >= 0 ? '+' : ''}${d.toFixed(1)} us of CPU per request (median of ${diffs.length} paired rounds; middle half ${lo.toFixed(1)} to ${hi.toFixed(1)}; ${sameSign} of ${diffs.length} rounds on the median's side)`)
  if (late > 0) console.log(`WARNING: ${late} requests were signed as they were sent (a pool ran out): the load generator's signing shared the machine`)
  if (failed > 0) console.log(`WARNING: ${failed} answers were errors or not 2xx: lower --rate, or the builds answer differently`)
  process.exitCode = failed > 0 ? 1 : 0
} finally {
  for (const g of gates) g.stop()
  other.remove()
}
