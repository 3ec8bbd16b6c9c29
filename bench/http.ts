/**
 * bench:http — HTTP throughput over mTLS with keep-alive: GET /challenge on the gate (memory store)
 * against the same request on a bare node:https server with the same TLS settings and a response
 * of the same shape (the baseline, bench/baseline-server.ts), both as separate processes, loaded
 * by autocannon with client certificates and several connections; then whole passes per second
 * (challenge, solve, submit).
 *
 * The servers run side by side and are loaded in alternation, `--rounds` times each, so that
 * the shared machine's noise falls on both; the table shows the medians, and the headline ratio
 * is the median of the per-round ratios (each gate round against the baseline round just before
 * it, which cancels the slow drifts of a shared machine). Next to requests per
 * second it shows each server's CPU time per request (utime + stime from /proc, Linux), a figure
 * that does not depend on how fast the load generator, which shares the machine, happens to be.
 * Target: GET /challenge >= 0.75x the baseline's requests per second.
 *
 * A third server in the same alternation is the gate with a bucket of one token a second: nearly
 * every request is refused with 429, so its row shows what refusing a flooding identity costs.
 * Any answer other than the expected ones (2xx; 429 from the limited gate) is reported, and makes
 * the run exit 1: the ratios would then measure other work.
 *
 * `--calibrate 5,10,20` then loads the baseline again spinning that many microseconds of CPU per
 * request: what a given amount of extra work per request costs in throughput on this machine.
 *
 * `--idle 15` lets every server sit idle that long after start before the first round: a gate that
 * answered its readiness probes and then waited for traffic. Every server runs as the gate is
 * deployed (`node --no-memory-reducer`), so the idle costs neither; `bench:idle-start` measures what
 * it costs under plain node (docs/decisions/next-tick-shape.md).
 *   npm run bench:http [-- --duration 6 --rounds 3 --connections 16 --passes-concurrency 8 --calibrate 5,10,20 --idle 15 --gate-args='--workers 1']
 */
import autocannon from 'autocannon'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createAgent, pass } from '../lib/client/agent.js'
import { DEV, splitArgs, startBaseline, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, middleHalf, table } from './util.js'

const values = benchArgs('bench:http', 'GET /challenge per second on the gate (memory store) against a bare node:https server with the same TLS settings, in alternating rounds; then whole passes per second.', {
  duration: { type: 'number', default: 6, help: 'seconds of each round, per server (and of the whole-pass run)' },
  rounds: { type: 'number', default: 5, help: 'alternating rounds (the headline is the median of the per-round ratios)' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
  'passes-concurrency': { type: 'number', default: 8, help: 'agents running whole passes at once' },
  calibrate: { type: 'string', default: '', help: 'microseconds of extra CPU per request to load the baseline with afterwards, e.g. 5,10,20', check: (v) => v.split(',').every((x) => Number(x) > 0) ? undefined : 'expected positive numbers separated by commas' },
  'gate-args': { type: 'string', default: '', help: "gate options added to the bench's, e.g. '--workers 1'" },
  idle: { type: 'number', default: 0, min: 0, integer: false, help: 'seconds every server sits idle after start (past its readiness checks) before the first round, as a gate that waits for its traffic does' },
})
const tlsOptions = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }

interface Load { rps: number, p50: number, p99: number, non2xx: number, errors: number, refused: number, serverUs?: number, loaderUs: number }

async function load (server: Child, path: string): Promise<Load> {
  const url = `https://localhost:${server.port}${path}`
  const connections = values.connections
  await autocannon({ url, connections, duration: 1, tlsOptions } as autocannon.Options) // warm-up
  const c0 = cpuMs(server.child.pid)
  const u0 = process.cpuUsage()
  const r = await autocannon({ url, connections, duration: values.duration, tlsOptions } as autocannon.Options)
  const u = process.cpuUsage(u0)
  const c1 = cpuMs(server.child.pid)
  const n = Math.max(1, r.requests.total)
  return {
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors,
    refused: (r as unknown as { statusCodeStats?: Record<string, { count: number }> }).statusCodeStats?.['429']?.count ?? 0,
    ...(c0 === undefined || c1 === undefined ? {} : { serverUs: (c1 - c0) * 1000 / n }),
    loaderUs: (u.user + u.system) / n,
  }
}

function summary (runs: Load[]): Load {
  const server = runs.map((r) => r.serverUs).filter((x): x is number => x !== undefined)
  return {
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    non2xx: runs.reduce((s, r) => s + r.non2xx, 0),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    refused: runs.reduce((s, r) => s + r.refused, 0),
    ...(server.length === 0 ? {} : { serverUs: median(server) }),
    loaderUs: median(runs.map((r) => r.loaderUs)),
  }
}

// The gates run with their defaults except BENCH_GATE_ARGS (bench/servers.ts: no rate limit, a
// memory-store bound no run reaches); `--gate-args` adds or overrides options.
const baseline = await startBaseline()
const gateArgs = splitArgs(values['gate-args'])
const gate = await startGateProcess(gateArgs)
// The refusal path: the same gate with a bucket of one token a second, so that all but about one
// request a second get 429 (a flooding identity). No target; it shows what refusing costs.
const limited = await startGateProcess([...gateArgs, '--rate-burst', '1', '--rate-per-second', '1'])
const baseRuns: Load[] = []
const gateRuns: Load[] = []
const refusedRuns: Load[] = []
if (values.idle > 0) await new Promise((resolve) => setTimeout(resolve, values.idle * 1000))
for (let i = 0; i < values.rounds; i++) {
  baseRuns.push(await load(baseline, '/'))
  gateRuns.push(await load(gate, '/challenge'))
  refusedRuns.push(await load(limited, '/challenge'))
}
baseline.stop()
limited.stop()
const base = summary(baseRuns)
const challenge = summary(gateRuns)
const refusal = summary(refusedRuns)
// Every answer must be the expected one: 2xx from the baseline and the gate, 429 (or a 200 for the
// bucket's one token a second) from the limited gate.
const failed = base.non2xx + base.errors + challenge.non2xx + challenge.errors + (refusal.non2xx - refusal.refused) + refusal.errors
const paired = gateRuns.map((g, i) => g.rps / baseRuns[i]!.rps)
const pairedRefused = median(refusedRuns.map((g, i) => g.rps / baseRuns[i]!.rps))
const pairedMedian = median(paired)

// Whole passes: concurrent agents, each looping challenge → solve (native, off the event loop) → submit.
const agent = createAgent({ url: `https://localhost:${gate.port}`, ...tlsOptions, connections: values['passes-concurrency'] })
let passes = 0
let failures = 0
const end = Date.now() + values.duration * 1000
const t0 = Date.now()
await Promise.all(Array.from({ length: values['passes-concurrency'] }, async () => {
  while (Date.now() < end) {
    try { await pass(agent); passes++ } catch { failures++ }
  }
}))
const passSecs = (Date.now() - t0) / 1000
await agent.close()
gate.stop()

const us = (x: number | undefined): string => x === undefined ? 'n/a' : x.toFixed(1)
console.log(`bench:http  ${machine()}  ${values.connections} connections, keep-alive, mTLS; ${values.rounds} alternating rounds of ${values.duration} s each, medians${values.idle > 0 ? `; servers idle ${values.idle} s before the first round` : ''}`)
console.log(table([
  { target: 'bare node:https (baseline)', 'req/s': Math.round(base.rps).toLocaleString('en'), 'p50 ms': String(base.p50), 'p99 ms': String(base.p99), 'non-2xx': String(base.non2xx), 'server CPU us/req': us(base.serverUs), 'load gen CPU us/req': us(base.loaderUs), 'req/s ratio': '1.00x' },
  { target: 'gate GET /challenge', 'req/s': Math.round(challenge.rps).toLocaleString('en'), 'p50 ms': String(challenge.p50), 'p99 ms': String(challenge.p99), 'non-2xx': String(challenge.non2xx), 'server CPU us/req': us(challenge.serverUs), 'load gen CPU us/req': us(challenge.loaderUs), 'req/s ratio': `${(challenge.rps / base.rps).toFixed(2)}x` },
  { target: 'gate GET /challenge refused (429)', 'req/s': Math.round(refusal.rps).toLocaleString('en'), 'p50 ms': String(refusal.p50), 'p99 ms': String(refusal.p99), 'non-2xx': `${refusal.non2xx} (429: ${refusal.refused})`, 'server CPU us/req': us(refusal.serverUs), 'load gen CPU us/req': us(refusal.loaderUs), 'req/s ratio': `${(refusal.rps / base.rps).toFixed(2)}x` },
]))
console.log(`rounds, req/s: baseline ${baseRuns.map((r) => Math.round(r.rps)).join(' ')}; gate ${gateRuns.map((r) => Math.round(r.rps)).join(' ')}; refused ${refusedRuns.map((r) => Math.round(r.rps)).join(' ')}`)
if (failed > 0) console.log(`WARNING: ${failed} responses were errors or not 2xx: the ratio below compares other work than GET /challenge's and is not valid`)
console.log(`GET /challenge vs baseline, median of the ${paired.length} per-round ratios: ${pairedMedian.toFixed(2)}x (target >= 0.75x; rounds ${paired.map((r) => r.toFixed(2)).join(' ')})`)
const [lo, hi] = middleHalf(paired)
const baseRps = baseRuns.map((r) => r.rps)
console.log(`spread: the middle half of the per-round ratios is ${lo.toFixed(2)}-${hi.toFixed(2)}x; the baseline's own req/s ranged ${Math.round(Math.min(...baseRps)).toLocaleString('en')}-${Math.round(Math.max(...baseRps)).toLocaleString('en')} over the rounds`)
console.log(`refused GET /challenge (429) vs baseline, median of the per-round ratios: ${pairedRefused.toFixed(2)}x (no target)`)
if (base.serverUs !== undefined && challenge.serverUs !== undefined) {
  console.log(`server CPU per request: gate ${challenge.serverUs.toFixed(1)} us vs baseline ${base.serverUs.toFixed(1)} us (${(base.serverUs / challenge.serverUs).toFixed(2)}x the baseline's efficiency)`)
}
if (values.calibrate !== '') {
  const rows = []
  for (const burn of values.calibrate.split(',').map(Number).filter((x) => x > 0)) {
    const b = await startBaseline(burn)
    const r = await load(b, '/')
    b.stop()
    rows.push({ 'baseline + extra CPU per request': `+${burn} us`, 'req/s': Math.round(r.rps).toLocaleString('en'), 'server CPU us/req': us(r.serverUs), 'vs baseline': `${(r.rps / base.rps).toFixed(2)}x` })
  }
  console.log('calibration (one round each):')
  console.log(table(rows))
}
console.log(`whole passes (default N = 2^20, sampled S = 8, ${values['passes-concurrency']} agents in this process): ${(passes / passSecs).toFixed(1)}/s, ${failures} failed`)
process.exit(failed > 0 ? 1 : 0)
