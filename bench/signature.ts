/**
 * bench:signature — what Web Bot Auth costs the gate (docs/protocol.md section 8): GET /challenge
 * on one gate (`--dev --web-bot-auth`, memory store), signed (no client certificate; every request
 * a fresh RFC 9421 signature, made by the load generator) and over mTLS, in alternating rounds on
 * keep-alive connections; the server's CPU per request of each, and a bare `crypto.verify` of a
 * signature base of the same size in this process. Target: signed <= mTLS + one verification + 15 µs.
 *   npm run bench:signature [-- --duration 5 --rounds 5 --connections 16]
 */
import autocannon from 'autocannon'
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { signRequest } from '../lib/webbotauth/sign.js'
import { DEV, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, medianNsPerUnit, table } from './util.js'

const values = benchArgs('bench:signature', 'Signed (Web Bot Auth) against mTLS GET /challenge on one gate, CPU per request, and a bare crypto.verify.', {
  duration: { type: 'number', default: 5, help: 'seconds of each round, per path' },
  rounds: { type: 'number', default: 5, help: 'alternating rounds' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
})
const ca = readFileSync(join(DEV, 'ca.pem'))
const key = createPrivateKey(readFileSync(join(DEV, 'signing-key.pem')))
const DIRECTORY = 'https://agent.aog.dev'

interface Load { rps: number, serverUs: number | undefined, bad: number }

async function load (gate: Child, signed: boolean, rate?: number): Promise<Load> {
  const authority = `localhost:${gate.port}`
  const opts = {
    url: `https://${authority}/challenge`,
    connections: values.connections,
    ...(rate === undefined ? {} : { overallRate: Math.max(1, Math.round(rate)) }),
    tlsOptions: signed ? { ca } : { ca, cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')) },
    ...(signed
      ? {
          requests: [{
            method: 'GET',
            path: '/challenge',
            setupRequest: (req: Record<string, unknown>) => ({ ...req, headers: { ...(req.headers as object), ...signRequest({ method: 'GET', authority, target: '/challenge' }, { key, directoryUrl: DIRECTORY }) } }),
          }],
        }
      : {}),
  } as autocannon.Options
  await autocannon({ ...opts, duration: 1 })
  const c0 = cpuMs(gate.child.pid)
  const r = await autocannon({ ...opts, duration: values.duration })
  const c1 = cpuMs(gate.child.pid)
  return { rps: r.requests.average, bad: r.non2xx + r.errors, serverUs: c0 === undefined || c1 === undefined ? undefined : (c1 - c0) * 1000 / Math.max(1, r.requests.total) }
}

// A bare verification of a signature base of the size the gate verifies.
const headers = signRequest({ method: 'GET', authority: 'localhost:8443', target: '/challenge' }, { key, directoryUrl: DIRECTORY })
const base = Buffer.from(`"@method": GET\n"@authority": localhost:8443\n"@path": /challenge\n"signature-agent": ${headers['signature-agent'] ?? ''}\n"@signature-params": ${headers['signature-input'].slice(5)}`)
const pub = createPublicKey(key)
const sig = sign(null, base, key)
const verifyUs = medianNsPerUnit(7, 2000, () => { for (let i = 0; i < 2000; i++) verify(null, base, pub, sig) }) / 1000

// No rate limit (one identity loads the gate), as the other benches.
const gate = await startGateProcess(['--web-bot-auth'])
const mtls: Load[] = []
const mtlsSameRate: Load[] = []
const signed: Load[] = []
for (let i = 0; i < values.rounds; i++) {
  mtls.push(await load(gate, false))
  signed.push(await load(gate, true))
  // mTLS again at the signed path's request rate: a server's fixed costs per wake-up (reads,
  // writes, timers) spread over fewer requests at a lower rate, so compare at the same rate too.
  mtlsSameRate.push(await load(gate, false, signed[signed.length - 1]!.rps))
}
gate.stop()
const us = (xs: Load[]): number => median(xs.map((x) => x.serverUs ?? NaN))
const m = us(mtls)
const mr = us(mtlsSameRate)
const s = us(signed)
const bad = [...mtls, ...signed, ...mtlsSameRate].reduce((a, x) => a + x.bad, 0)
console.log(`bench:signature  ${machine()}  ${values.connections} connections, keep-alive; ${values.rounds} alternating rounds of ${values.duration} s, medians`)
console.log(table([
  { path: 'GET /challenge over mTLS', 'req/s': Math.round(median(mtls.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': m.toFixed(1) },
  { path: 'GET /challenge over mTLS, at the signed rate', 'req/s': Math.round(median(mtlsSameRate.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': mr.toFixed(1) },
  { path: 'GET /challenge signed (Web Bot Auth)', 'req/s': Math.round(median(signed.map((x) => x.rps))).toLocaleString('en'), 'server CPU us/req': s.toFixed(1) },
  { path: 'bare crypto.verify (Ed25519, this process)', 'req/s': '', 'server CPU us/req': verifyUs.toFixed(1) },
]))
const extra = s - mr - verifyUs
console.log(`signed - mTLS at the same rate - one verification: ${extra.toFixed(1)} us per request (target <= 15 us: ${extra <= 15 ? 'met' : 'MISSED'}); against mTLS at full speed: ${(s - m - verifyUs).toFixed(1)} us`)
console.log(`capacity: about ${Math.round(1e6 / s).toLocaleString('en')} signed GET /challenge per second per core, against ${Math.round(1e6 / m).toLocaleString('en')} over mTLS`)
if (bad > 0) console.log(`WARNING: ${bad} responses were errors or not 2xx: the figures compare other work`)
process.exit(bad > 0 ? 1 : 0)
