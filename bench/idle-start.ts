/**
 * bench:idle-start — what an idle start costs: two gates started together, one as deployed (node
 * with GATE_NODE_ARGS: `--no-memory-reducer`, as bin/aog-server.ts's first line runs it) and one
 * under plain `node`, both left idle `--idle` seconds after they answer /readyz (as a gate waits for
 * its first traffic), then loaded in alternation with mTLS GET /challenge. V8's memory reducer runs
 * a full GC some 8 s into an idle spell; under plain node that leaves node's nextTick on V8's slow
 * path for the life of the process (docs/decisions/next-tick-shape.md). Reports each gate's CPU
 * per request (utime + stime from /proc, Linux) per round, and the median of the per-round ratios.
 * A non-2xx answer is reported and makes the run exit 1.
 *   npm run bench:idle-start [-- --idle 30 --rounds 6 --duration 4 --connections 16]
 */
import autocannon from 'autocannon'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEV, GATE_NODE_ARGS, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, middleHalf, table } from './util.js'

const values = benchArgs('bench:idle-start', 'Two gates idle after start, one as deployed (node --no-memory-reducer) and one under plain node, then loaded in alternation: CPU per mTLS GET /challenge.', {
  idle: { type: 'number', default: 30, min: 0, integer: false, help: 'seconds both gates sit idle after start before the first round' },
  rounds: { type: 'number', default: 6, help: 'alternating rounds (the headline is the median of the per-round ratios)' },
  duration: { type: 'number', default: 4, help: 'seconds of each round, per gate' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
})
const tlsOptions = { ca: readFileSync(join(DEV, 'ca.pem')), cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')) }

interface Round { rps: number, serverUs: number, bad: number }

async function round (gate: Child): Promise<Round> {
  const c0 = cpuMs(gate.child.pid)
  const r = await autocannon({ url: `https://localhost:${gate.port}/challenge`, connections: values.connections, duration: values.duration, tlsOptions } as autocannon.Options)
  const c1 = cpuMs(gate.child.pid)
  return { rps: r.requests.average, serverUs: c0 === undefined || c1 === undefined ? NaN : (c1 - c0) * 1000 / Math.max(1, r.requests.total), bad: r.non2xx + r.errors }
}

const deployed = await startGateProcess([], undefined, undefined, GATE_NODE_ARGS)
const plain = await startGateProcess([], undefined, undefined, [])
if (values.idle > 0) await new Promise((resolve) => setTimeout(resolve, values.idle * 1000))
const a: Round[] = []
const b: Round[] = []
for (let i = 0; i < values.rounds; i++) {
  a.push(await round(deployed))
  b.push(await round(plain))
}
deployed.stop()
plain.stop()

const ratios = b.map((x, i) => x.serverUs / a[i]!.serverUs)
const [lo, hi] = middleHalf(ratios)
console.log(`bench:idle-start  ${machine()}  both gates idle ${values.idle} s after start, then ${values.rounds} alternating rounds of ${values.duration} s, ${values.connections} connections, mTLS keep-alive`)
console.log(table([
  { gate: `as deployed (node ${GATE_NODE_ARGS.join(' ')})`, 'req/s': Math.round(median(a.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': median(a.map((x) => x.serverUs)).toFixed(1), rounds: a.map((x) => x.serverUs.toFixed(1)).join(' ') },
  { gate: 'plain node', 'req/s': Math.round(median(b.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': median(b.map((x) => x.serverUs)).toFixed(1), rounds: b.map((x) => x.serverUs.toFixed(1)).join(' ') },
]))
console.log(`plain node / as deployed, CPU per request, median of the per-round ratios: ${median(ratios).toFixed(3)}x (middle half ${lo.toFixed(3)} to ${hi.toFixed(3)}; rounds ${ratios.map((x) => x.toFixed(2)).join(' ')})`)
const bad = [...a, ...b].reduce((n, x) => n + x.bad, 0)
if (bad > 0) {
  console.log(`ERROR: ${bad} answers were not 2xx: the figures measure other work`)
  process.exitCode = 1
}
