/**
 * bench:handshake — new mTLS connections per second (full handshakes, no session reuse) against the
 * gate and against a bare node:https server with the same TLS settings (the baseline). Both servers
 * run side by side and are loaded in alternation, `--rounds` times each, so that the shared
 * machine's noise falls on both; the headline ratio is the median of the per-round ratios (each
 * gate round against the baseline round just before it). Next to handshakes per second it shows
 * each server's CPU time per handshake (utime + stime from /proc, Linux). A handshake that fails is
 * counted, reported, and makes the run exit 1.
 *   npm run bench:handshake [-- --duration 5 --rounds 5 --concurrency 16]
 */
import { connect } from 'node:tls'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEV, startBaseline, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, middleHalf, table } from './util.js'

const values = benchArgs('bench:handshake', 'New mTLS connections per second (full handshakes) against the gate and a bare node:https server with the same TLS settings, in alternating rounds.', {
  duration: { type: 'number', default: 5, help: 'seconds of each round, per server' },
  rounds: { type: 'number', default: 5, help: 'alternating rounds (the headline is the median of the per-round ratios)' },
  concurrency: { type: 'number', default: 16, help: 'connections being opened at once' },
})
const tls = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')), servername: 'localhost' }

interface Run { perSecond: number, failed: number, serverUs?: number }

async function handshakes (server: Child, seconds: number): Promise<Run> {
  let n = 0
  let failed = 0
  const c0 = cpuMs(server.child.pid)
  const t0 = Date.now()
  const end = t0 + seconds * 1000
  await Promise.all(Array.from({ length: values.concurrency }, async () => {
    while (Date.now() < end) {
      await new Promise<void>((resolve) => {
        const s = connect({ ...tls, port: server.port, host: '127.0.0.1' }, () => { n++; s.destroy(); resolve() })
        s.once('error', () => { failed++; s.destroy(); resolve() })
      })
    }
  }))
  const c1 = cpuMs(server.child.pid)
  const secs = (Date.now() - t0) / 1000
  return { perSecond: n / secs, failed, ...(c0 === undefined || c1 === undefined || n === 0 ? {} : { serverUs: (c1 - c0) * 1000 / n }) }
}

const baseline = await startBaseline()
const gate = await startGateProcess()
await handshakes(baseline, 1) // warm-up
await handshakes(gate, 1)
const baseRuns: Run[] = []
const gateRuns: Run[] = []
for (let i = 0; i < values.rounds; i++) {
  baseRuns.push(await handshakes(baseline, values.duration))
  gateRuns.push(await handshakes(gate, values.duration))
}
baseline.stop()
gate.stop()

const cpu = (runs: Run[]): string => {
  const xs = runs.map((r) => r.serverUs).filter((x): x is number => x !== undefined)
  return xs.length === 0 ? 'n/a' : median(xs).toFixed(0)
}
const failures = (runs: Run[]): number => runs.reduce((s, r) => s + r.failed, 0)
const failed = failures(baseRuns) + failures(gateRuns)
const paired = gateRuns.map((g, i) => g.perSecond / baseRuns[i]!.perSecond)
const base = median(baseRuns.map((r) => r.perSecond))
const g = median(gateRuns.map((r) => r.perSecond))
console.log(`bench:handshake  ${machine()}  ${values.concurrency} concurrent, full mTLS handshakes (ECDSA P-256); ${values.rounds} alternating rounds of ${values.duration} s each, medians`)
console.log(table([
  { target: 'bare node:https (baseline)', 'handshakes/s': Math.round(base).toLocaleString('en'), 'server CPU us/handshake': cpu(baseRuns), failed: String(failures(baseRuns)), ratio: '1.00x' },
  { target: 'gate', 'handshakes/s': Math.round(g).toLocaleString('en'), 'server CPU us/handshake': cpu(gateRuns), failed: String(failures(gateRuns)), ratio: `${(g / base).toFixed(2)}x` },
]))
console.log(`rounds, handshakes/s: baseline ${baseRuns.map((r) => Math.round(r.perSecond)).join(' ')}; gate ${gateRuns.map((r) => Math.round(r.perSecond)).join(' ')}`)
if (failed > 0) console.log(`WARNING: ${failed} handshakes failed: the ratio below is not valid`)
const [lo, hi] = middleHalf(paired)
console.log(`gate vs baseline, median of the ${paired.length} per-round ratios: ${median(paired).toFixed(2)}x (no target; rounds ${paired.map((r) => r.toFixed(2)).join(' ')}; middle half ${lo.toFixed(2)}-${hi.toFixed(2)}x)`)
process.exit(failed > 0 ? 1 : 0)
