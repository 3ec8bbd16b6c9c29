/**
 * bench:signature — what Web Bot Auth costs the gate (docs/protocol.md section 8): GET /challenge
 * on one gate (`--dev --web-bot-auth`, memory store), signed (no client certificate; every request
 * a fresh RFC 9421 signature) and over mTLS, in alternating rounds on keep-alive connections, each
 * as fast as the gate answers; the server's CPU per request of each, and a bare verification of a
 * signature base of the same size in this process, by node:crypto and by the gate's verifier
 * (libsodium unless AOG_NATIVE=0), measured in every round. Target: signed <= mTLS + one
 * verification + 15 µs, as the median of the per-round differences.
 *
 * Two things keep the load generator's own work out of the gate's figure (docs/decisions/signature-cost.md):
 * the signatures of a round are made before it starts (a pool of fresh ones, each used once), and
 * during every load this process polls instead of sleeping, so that the gate's response write does
 * not pay the kernel for waking an idle vCPU of the load generator (on loopback the sender's
 * system call delivers the segment and wakes the receiver). Both paths run under the same conditions.
 *
 * "One verification" is measured where and when the gate works: the gate is pinned to one CPU and
 * this process to another (taskset), and a probe process (verify-probe.ts) pinned to the gate's CPU
 * verifies the same signature base over and over every half second of every round (their mean). A virtual
 * machine's CPU runs at one speed and, moments later, at two thirds of it; a bare figure taken
 * between the rounds, on an idle core, was often in the other state than the load it was
 * subtracted from. The probe runs in the mTLS rounds too (the same disturbance to both loads), where
 * it is slower: the gate is not verifying, so libsodium's code and tables are not warm in the core's
 * caches. The idle bare figures are still shown.
 *   npm run bench:signature [-- --duration 5 --rounds 5 --connections 16]
 */
import autocannon from 'autocannon'
import { spawn, spawnSync } from 'node:child_process'
import { createPublicKey, sign, verify } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { ed25519Verifier } from '../lib/webbotauth/ed25519.js'
import { DEV, ROOT, startGateProcess, tracked, type Child } from './servers.js'
import { challengeBase, SIGNING_KEY as key, signedLoad } from './signed.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, medianNsPerUnit, table } from './util.js'

const values = benchArgs('bench:signature', 'Signed (Web Bot Auth) against mTLS GET /challenge on one gate, CPU per request, and a bare crypto.verify.', {
  duration: { type: 'number', default: 5, help: 'seconds of each round, per path' },
  rounds: { type: 'number', default: 5, help: 'alternating rounds' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
})
const ca = readFileSync(join(DEV, 'ca.pem'))

interface Probe { same: number, fresh: number }
const mean = (xs: number[]): number => xs.reduce((a, x) => a + x, 0) / xs.length
interface Load { rps: number, serverUs: number | undefined, bad: number, signedLate: number, probe: Probe }

/** Keeps this process's event loop polling (never blocked in epoll_wait) until the returned stop is called. */
function keepPolling (): () => void {
  let on = true
  const spin = (): void => { if (on) setImmediate(spin) }
  spin()
  return () => { on = false }
}

async function load (gate: Child, signed: boolean, expectedRps: number): Promise<Load> {
  const authority = `localhost:${gate.port}`
  // Enough for the warm-up second and the round at half again the expected rate (a request beyond
  // the pool is counted: then the round also measured the signing).
  const pool = signed ? signedLoad(authority, expectedRps * 1.5 * (values.duration + 1)) : undefined
  const opts = {
    url: `https://${authority}/challenge`,
    connections: values.connections,
    tlsOptions: signed ? { ca } : { ca, cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')) },
    ...(pool === undefined ? {} : { requests: pool.requests }),
  } as autocannon.Options
  const stop = keepPolling()
  try {
    await autocannon({ ...opts, duration: 1 })
    const c0 = cpuMs(gate.child.pid)
    const run = autocannon({ ...opts, duration: values.duration })
    // A probe every half second of the round; their mean follows the machine's speed through it.
    const count = Math.max(1, Math.floor(values.duration * 2) - 1)
    const probes = Array.from({ length: count }, async (_, k) => {
      await new Promise((resolve) => setTimeout(resolve, (k + 1) * 500))
      return await probe.measure()
    })
    const r = await run
    const c1 = cpuMs(gate.child.pid)
    const ps = await Promise.all(probes)
    return {
      rps: r.requests.average,
      bad: r.non2xx + r.errors,
      signedLate: pool?.late() ?? 0,
      serverUs: c0 === undefined || c1 === undefined ? undefined : (c1 - c0) * 1000 / Math.max(1, r.requests.total),
      probe: { same: mean(ps.map((p) => p.same)), fresh: mean(ps.map((p) => p.fresh)) },
    }
  } finally {
    stop()
  }
}

// A bare verification of a signature base of the size the gate verifies.
const base = challengeBase()
const pub = createPublicKey(key)
const sig = sign(null, base, key)
// The verifier the gate uses (the gate process inherits this environment, so it picks the same).
const gateVerifier = ed25519Verifier()
// Measured in every round too, between the loads, on an idle core: shown, not used by the target.
const bareVerify = (): { node: number, gate: number } => {
  const node = medianNsPerUnit(3, 1000, () => { for (let i = 0; i < 1000; i++) verify(null, base, pub, sig) }) / 1000
  return { node, gate: gateVerifier.name === 'node:crypto' ? node : medianNsPerUnit(3, 1000, () => { for (let i = 0; i < 1000; i++) gateVerifier.verify(base, pub, sig) }) / 1000 }
}

/** Pin a process (all its threads) to one CPU; false when taskset is missing or refuses. */
function pin (pid: number | undefined, cpu: number): boolean {
  return pid !== undefined && spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' }).status === 0
}

/** The probe process (verify-probe.ts) pinned to `cpu` (when there are two): `measure` asks it once. */
async function startProbe (cpu: number | undefined): Promise<{ measure: () => Promise<Probe>, stop: () => void }> {
  const child = tracked(spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'verify-probe.js')], { stdio: ['pipe', 'pipe', 'inherit'] }))
  if (cpu !== undefined) pin(child.pid, cpu)
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const read = async (): Promise<Record<string, unknown>> => {
    const l = await lines.next()
    if (l.done === true) throw new Error('the verification probe exited')
    return JSON.parse(l.value) as Record<string, unknown>
  }
  const ready = await read()
  if (ready.ready !== gateVerifier.name) throw new Error(`the probe verifies with ${String(ready.ready)}, the gate with ${gateVerifier.name}`)
  // One question at a time: the answers come back in order.
  let queue: Promise<unknown> = Promise.resolve()
  const measure = async (): Promise<Probe> => {
    const answer = queue.then(async () => {
      child.stdin!.write('probe\n')
      return await read() as unknown as Probe
    })
    queue = answer.catch(() => {})
    return await answer
  }
  return { measure, stop: () => child.kill('SIGTERM') }
}

// No rate limit (one identity loads the gate), as the other benches.
const gate = await startGateProcess(['--web-bot-auth'])
// With libsodium, a second gate on node:crypto (AOG_NATIVE=0) in the same rounds: the same-run
// figure for the choice of verifier.
const fallback = gateVerifier.name === 'node:crypto' ? undefined : await startGateProcess(['--web-bot-auth'], undefined, { ...process.env, AOG_NATIVE: '0' })
// The gates (one loaded at a time) and the probe on CPU 1, this process (the load generator) on CPU 0.
const pinned = cpus().length >= 2 && pin(process.pid, 0) && pin(gate.child.pid, 1) && (fallback === undefined || pin(fallback.child.pid, 1))
if (!pinned) console.log('WARNING: the gate and the probe could not be pinned to one CPU (taskset missing, or one CPU): the probe may run elsewhere than the gate')
const probe = await startProbe(pinned ? 1 : undefined)
const mtls: Load[] = []
const signed: Load[] = []
const signedFallback: Load[] = []
const verifies: Array<{ node: number, gate: number }> = []
for (let i = 0; i < values.rounds; i++) {
  mtls.push(await load(gate, false, 0))
  verifies.push(bareVerify())
  // Each signed round's pool is sized from half the rate of the mTLS round before it (a signed
  // request costs more) or the fastest signed round so far, whichever is higher: a round after a
  // slow one must not run out (its load generator would sign while the gate is measured).
  const guess = mtls[mtls.length - 1]!.rps / 2
  signed.push(await load(gate, true, Math.max(5000, guess, ...signed.map((x) => x.rps))))
  if (fallback !== undefined) signedFallback.push(await load(fallback, true, Math.max(5000, guess, ...signedFallback.map((x) => x.rps))))
}
gate.stop()
fallback?.stop()
probe.stop()
const us = (xs: Load[]): number => median(xs.map((x) => x.serverUs ?? NaN))
const m = us(mtls)
const s = us(signed)
const verifyUs = median(verifies.map((v) => v.node))
const gateVerifyUs = median(verifies.map((v) => v.gate))
// The target's figure per round (its own mTLS and signed loads, and the probe's verification on the
// gate's CPU during the signed load), then their median.
const extras = signed.map((x, i) => (x.serverUs ?? NaN) - (mtls[i]!.serverUs ?? NaN) - x.probe.same / 1000)
// Signed rounds at another speed than most (their probe more than 10% from the median probe).
const probeMedian = median(signed.map((x) => x.probe.same))
const uneven = signed.filter((x) => Math.abs(x.probe.same / probeMedian - 1) > 0.1).length
const bad = [...mtls, ...signed, ...signedFallback].reduce((a, x) => a + x.bad, 0)
const late = [...signed, ...signedFallback].reduce((a, x) => a + x.signedLate, 0)
console.log(`bench:signature  ${machine()}  ${values.connections} connections, keep-alive, each path as fast as the gate answers; ${values.rounds} alternating rounds of ${values.duration} s, medians`)
console.log(table([
  { path: 'GET /challenge over mTLS', 'req/s': Math.round(median(mtls.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': m.toFixed(1), rounds: mtls.map((x) => (x.serverUs ?? NaN).toFixed(0)).join(' ') },
  { path: 'GET /challenge signed (Web Bot Auth)', 'req/s': Math.round(median(signed.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': s.toFixed(1), rounds: signed.map((x) => (x.serverUs ?? NaN).toFixed(0)).join(' ') },
  ...(fallback === undefined ? [] : [{ path: 'signed, a second gate verifying with node:crypto', 'req/s': Math.round(median(signedFallback.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': us(signedFallback).toFixed(1), rounds: signedFallback.map((x) => (x.serverUs ?? NaN).toFixed(0)).join(' ') }]),
  { path: `one ${gateVerifier.name} verification, the gate's CPU, signed rounds`, 'req/s': '', 'server CPU us/req': (median(signed.map((x) => x.probe.same)) / 1000).toFixed(1), rounds: signed.map((x) => (x.probe.same / 1000).toFixed(0)).join(' ') },
  { path: '  the same, mTLS rounds (its code not warm in the core)', 'req/s': '', 'server CPU us/req': (median(mtls.map((x) => x.probe.same)) / 1000).toFixed(1), rounds: mtls.map((x) => (x.probe.same / 1000).toFixed(0)).join(' ') },
  { path: '  distinct signatures, each once, signed rounds', 'req/s': '', 'server CPU us/req': (median(signed.map((x) => x.probe.fresh)) / 1000).toFixed(1), rounds: signed.map((x) => (x.probe.fresh / 1000).toFixed(0)).join(' ') },
  { path: 'bare crypto.verify (Ed25519, node:crypto), idle core', 'req/s': '', 'server CPU us/req': verifyUs.toFixed(1), rounds: verifies.map((v) => v.node.toFixed(0)).join(' ') },
  ...(gateVerifier.name === 'node:crypto' ? [] : [{ path: `bare ${gateVerifier.name} verify, idle core`, 'req/s': '', 'server CPU us/req': gateVerifyUs.toFixed(1), rounds: verifies.map((v) => v.gate.toFixed(0)).join(' ') }]),
]))
const extra = median(extras)
console.log(`signed - mTLS - one verification (${gateVerifier.name}, on the gate's CPU during the signed round), median of the per-round differences: ${extra.toFixed(1)} us per request (target <= 15 us: ${extra <= 15 ? 'met' : 'MISSED'}; rounds ${extras.map((x) => x.toFixed(0)).join(' ')})`)
console.log(`capacity: about ${Math.round(1e6 / s).toLocaleString('en')} signed GET /challenge per second per core, against ${Math.round(1e6 / m).toLocaleString('en')} over mTLS`)
if (uneven > 0) console.log(`WARNING: in ${uneven} of ${values.rounds} signed rounds the probe's verification was more than 10% from its median: the machine changed speed during the run, and the per-round differences mix speeds`)
if (late > 0) console.log(`WARNING: ${late} requests were signed during their round (the pool ran out): the load generator's signing shared the machine`)
if (bad > 0) console.log(`WARNING: ${bad} responses were errors or not 2xx: the figures compare other work`)
process.exit(bad > 0 ? 1 : 0)
