/**
 * bench:compare — does a change make GET /challenge cheaper? Two builds of the gate, this checkout's
 * and another commit's (built in a temporary git worktree), loaded **at the same time**, each as
 * fast as it answers (or at `--rate`), round after round; the figure is the median of the per-round
 * differences of their CPU time per request. Both servers see the same machine in every round, so
 * the difference holds while the machine's own speed swings by a third between rounds, which a
 * throughput ratio over alternating rounds does not resolve below a few µs
 * (docs/decisions/request-log-line.md). Any non-2xx answer or error makes the run exit 1.
 *   npm run bench:compare -- --ref HEAD~1 [--rounds 8 --duration 5 --connections 16 --rate 0 --path /challenge --gate-args='...']
 */
import autocannon from 'autocannon'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEV, ROOT, splitArgs, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, middleHalf, table } from './util.js'

const values = benchArgs('bench:compare', "CPU per request of this checkout's gate against another commit's, both loaded at once: the median of the per-round differences.", {
  ref: { type: 'string', default: 'HEAD', help: 'the commit to compare with (built in a temporary worktree)' },
  rate: { type: 'number', default: 0, min: 0, help: 'requests per second sent to each gate (0: as fast as each answers)' },
  rounds: { type: 'number', default: 8, help: 'rounds (the figure is the median of the per-round differences)' },
  duration: { type: 'number', default: 5, help: 'seconds of each round' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections to each gate' },
  path: { type: 'string', default: '/challenge', help: 'the path to load', check: (v) => v.startsWith('/') ? undefined : 'expected a path starting with /' },
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

interface Round { us: number[], failed: number }

async function round (gates: Child[], seconds: number): Promise<Round> {
  const c0 = gates.map((g) => cpuMs(g.child.pid))
  const runs = await Promise.all(gates.map(async (g) => await autocannon({
    url: `https://localhost:${g.port}${values.path}`, connections: values.connections, duration: seconds, tlsOptions, ...(values.rate > 0 ? { overallRate: values.rate } : {}),
  } as autocannon.Options)))
  const c1 = gates.map((g) => cpuMs(g.child.pid))
  return {
    us: gates.map((_g, i) => ((c1[i] ?? NaN) - (c0[i] ?? NaN)) * 1000 / Math.max(1, runs[i]!.requests.total)),
    failed: runs.reduce((n, r) => n + r.non2xx + r.errors, 0),
  }
}

const other = buildRef(values.ref)
const gateArgs = splitArgs(values['gate-args'])
let gates: Child[] = []
try {
  gates = [await startGateProcess(gateArgs, other.root), await startGateProcess(gateArgs)]
  await round(gates, 2) // warm-up: the JIT settles
  const rounds: Round[] = []
  for (let i = 0; i < values.rounds; i++) rounds.push(await round(gates, values.duration))
  const diffs = rounds.map((r) => r.us[1]! - r.us[0]!)
  const d = median(diffs)
  const [lo, hi] = middleHalf(diffs)
  const sameSign = diffs.filter((x) => Math.sign(x) === Math.sign(d)).length
  const failed = rounds.reduce((n, r) => n + r.failed, 0)
  console.log(`bench:compare  ${machine()}  ${values.path} ${values.rate > 0 ? `at ${values.rate}/s` : 'as fast as each answers'} to each gate, ${values.connections} connections each, ${values.rounds} rounds of ${values.duration} s, both loaded at once`)
  console.log(table(rounds.map((r, i) => ({ round: i + 1, [`${other.commit} CPU us/req`]: r.us[0]!.toFixed(1), 'this checkout CPU us/req': r.us[1]!.toFixed(1), difference: diffs[i]!.toFixed(1) }))))
  console.log(`this checkout against ${values.ref} (${other.commit}): ${d >= 0 ? '+' : ''}${d.toFixed(1)} us of CPU per request (median of ${diffs.length} paired rounds; middle half ${lo.toFixed(1)} to ${hi.toFixed(1)}; ${sameSign} of ${diffs.length} rounds on the median's side)`)
  if (failed > 0) console.log(`WARNING: ${failed} answers were errors or not 2xx: lower --rate, or the builds answer differently`)
  process.exitCode = failed > 0 ? 1 : 0
} finally {
  for (const g of gates) g.stop()
  other.remove()
}
