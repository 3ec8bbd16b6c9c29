/**
 * bench:http — HTTP throughput over mTLS with keep-alive: GET /challenge on the gate (memory store)
 * against the same request on a bare node:https server with the same TLS settings (the baseline,
 * bench/baseline-server.ts), both as separate processes, loaded by autocannon with client
 * certificates and several connections; then whole passes per second (challenge, solve, submit).
 * Target: GET /challenge >= 0.85x the baseline's requests per second.
 *   npm run bench:http [-- --duration 8 --connections 16 --passes-concurrency 8]
 */
import autocannon from 'autocannon'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { createAgent, pass } from '../lib/client/agent.js'
import { DEV, startBaseline, startGateProcess } from './servers.js'
import { machine, table } from './util.js'

const { values } = parseArgs({ options: {
  duration: { type: 'string', default: '8' },
  connections: { type: 'string', default: '16' },
  'passes-concurrency': { type: 'string', default: '8' },
} })
const tlsOptions = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }

async function load (url: string): Promise<{ rps: number, p50: number, p99: number, non2xx: number, errors: number }> {
  // Warm-up, then the measured run.
  await autocannon({ url, connections: Number(values.connections), duration: 1, tlsOptions } as autocannon.Options)
  const r = await autocannon({ url, connections: Number(values.connections), duration: Number(values.duration), tlsOptions } as autocannon.Options)
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors }
}

const baseline = await startBaseline()
const base = await load(`https://localhost:${baseline.port}/`)
baseline.stop()
const gate = await startGateProcess()
const challenge = await load(`https://localhost:${gate.port}/challenge`)

// Whole passes: concurrent agents, each looping challenge → solve (native, off the event loop) → submit.
const agent = createAgent({ url: `https://localhost:${gate.port}`, ...tlsOptions, connections: Number(values['passes-concurrency']) })
let passes = 0
let failures = 0
const end = Date.now() + Number(values.duration) * 1000
const t0 = Date.now()
await Promise.all(Array.from({ length: Number(values['passes-concurrency']) }, async () => {
  while (Date.now() < end) {
    try { await pass(agent); passes++ } catch { failures++ }
  }
}))
const passSecs = (Date.now() - t0) / 1000
await agent.close()
gate.stop()

console.log(`bench:http  ${machine()}  ${values.connections} connections, ${values.duration} s each, keep-alive, mTLS`)
console.log(table([
  { target: 'bare node:https (baseline)', 'req/s': Math.round(base.rps).toLocaleString('en'), 'p50 ms': String(base.p50), 'p99 ms': String(base.p99), 'non-2xx': String(base.non2xx), ratio: '1.00x' },
  { target: 'gate GET /challenge', 'req/s': Math.round(challenge.rps).toLocaleString('en'), 'p50 ms': String(challenge.p50), 'p99 ms': String(challenge.p99), 'non-2xx': String(challenge.non2xx), ratio: `${(challenge.rps / base.rps).toFixed(2)}x (target >= 0.85x)` },
]))
console.log(`whole passes (default N = 2^20, sampled S = 8, ${values['passes-concurrency']} agents in this process): ${(passes / passSecs).toFixed(1)}/s, ${failures} failed`)
process.exit(0)
