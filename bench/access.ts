/**
 * bench:auth and bench:proxy — what the gate adds after the pass (docs/protocol.md section 7).
 * Every baseline signs the same X-AOG-Agent with the same key (the one cost the gate cannot
 * avoid), so the ratios measure everything else: the identity step, the store call, the proxy.
 *
 *   --mode auth    GET /auth with a live grant (memory store, then Redis) against a bare
 *                  node:https server that signs and answers 204. Targets: >= 0.8x (memory),
 *                  >= 0.5x (Redis) requests per second.
 *   --mode proxy   requests through --upstream against a bare node:https + undici reverse proxy
 *                  that signs, both in front of the same upstream; and the upstream called
 *                  directly (plain HTTP), for the record. Targets: >= 0.8x throughput, p99 <= 1.25x.
 *
 * Servers are loaded in alternating rounds by autocannon with client certificates over keep-alive
 * connections; headline ratios are medians of per-round ratios. CPU per request from /proc.
 *   npm run bench:auth [-- --duration 5 --rounds 5 --connections 16 --redis redis://127.0.0.1:6379]
 *   npm run bench:proxy [-- --duration 5 --rounds 5 --connections 16]
 */
import autocannon from 'autocannon'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createAgent, pass } from '../lib/client/agent.js'
import { createAssertionSigner, loadAssertionKeys } from '../lib/assertion.js'
import { DEV, startAccessServer, startGateProcess, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, medianNsPerUnit, table } from './util.js'

const values = benchArgs('bench:auth / bench:proxy', 'GET /auth and the --upstream proxy against bare node:https servers that sign the same assertion, in alternating rounds.', {
  mode: { type: 'string', default: 'auth', help: 'auth or proxy', check: (v) => v === 'auth' || v === 'proxy' ? undefined : 'expected auth or proxy' },
  duration: { type: 'number', default: 5, help: 'seconds of each round, per server' },
  rounds: { type: 'number', default: 5, help: 'alternating rounds (headlines are medians of per-round ratios)' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
  redis: { type: 'string', default: 'redis://127.0.0.1:6379', help: 'bench:auth: the Redis of the Redis row (empty: skip it)' },
})
const tls = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }
const KEY = join(DEV, 'assertion-key.pem')
const OPEN = ['--assertion-key', KEY, '--grant-ttl-seconds', '604800', '--upstream-rate-burst', '1000000000', '--upstream-rate-per-second', '1000000000']
const PATH = '/api/items?page=2'

interface Load { rps: number, p50: number, p99: number, bad: number, serverUs: number | undefined }

async function load (server: Child, https: boolean, path: string, headers: Record<string, string> = {}): Promise<Load> {
  const url = `${https ? 'https' : 'http'}://${https ? 'localhost' : '127.0.0.1'}:${server.port}${path}`
  const opts = { url, connections: values.connections, headers, ...(https ? { tlsOptions: tls } : {}) } as autocannon.Options
  await autocannon({ ...opts, duration: 1 })
  const c0 = cpuMs(server.child.pid)
  const r = await autocannon({ ...opts, duration: values.duration })
  const c1 = cpuMs(server.child.pid)
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, bad: r.non2xx + r.errors, serverUs: c0 === undefined || c1 === undefined ? undefined : (c1 - c0) * 1000 / Math.max(1, r.requests.total) }
}

/** A gate holding a live grant for the bench's agent. */
async function grantedGate (args: string[]): Promise<Child> {
  const g = await startGateProcess([...OPEN, ...args])
  const agent = createAgent({ url: `https://localhost:${g.port}`, ...tls })
  await pass(agent)
  await agent.close()
  return g
}

const us = (x: number | undefined): string => x === undefined ? 'n/a' : x.toFixed(1)
const rows: Array<Record<string, string>> = []
function row (name: string, runs: Load[], base?: Load[]): Load {
  const m: Load = { rps: median(runs.map((r) => r.rps)), p50: median(runs.map((r) => r.p50)), p99: median(runs.map((r) => r.p99)), bad: runs.reduce((s, r) => s + r.bad, 0), serverUs: runs[0]?.serverUs === undefined ? undefined : median(runs.map((r) => r.serverUs ?? 0)) }
  const ratio = base === undefined ? 1 : median(runs.map((r, i) => r.rps / base[i]!.rps))
  rows.push({ server: name, 'req/s': Math.round(m.rps).toLocaleString('en'), 'p50 ms': String(m.p50), 'p99 ms': String(m.p99), 'not 2xx': String(m.bad), 'server CPU us/req': us(m.serverUs), 'req/s ratio': `${ratio.toFixed(2)}x` })
  return m
}

// The signature's own cost, in this process: what every row below pays per request.
const signer = createAssertionSigner({ keys: loadAssertionKeys([KEY]), issuer: 'aog', audience: 'aog-upstream', ttlSeconds: 30 })
const claims = { sub: 'ab'.repeat(32), htm: 'GET', htu: PATH, cnf: { 'x5t#S256': 'q'.repeat(43) }, grant_exp: Date.now() }
const signUs = medianNsPerUnit(5, 2000, () => { for (let i = 0; i < 2000; i++) void signer.sign(claims) }) / 1000

let bad = 0
const notes: string[] = []
if (values.mode === 'auth') {
  const headers = { 'x-original-method': 'GET', 'x-original-uri': PATH }
  const baseline = await startAccessServer('auth')
  const gate = await grantedGate([])
  const redisGate = values.redis === '' ? undefined : await grantedGate(['--store', 'redis', '--redis-url', values.redis, '--redis-prefix', `bench${process.pid}:`])
  const b: Load[] = []; const g: Load[] = []; const r: Load[] = []
  for (let i = 0; i < values.rounds; i++) {
    b.push(await load(baseline, true, PATH, headers))
    g.push(await load(gate, true, '/auth', headers))
    if (redisGate !== undefined) r.push(await load(redisGate, true, '/auth', headers))
  }
  row('bare node:https, signs, 204 (baseline)', b)
  row('gate GET /auth, memory store', g, b)
  const gm = median(g.map((x, i) => x.rps / b[i]!.rps))
  notes.push(`GET /auth (memory) vs baseline: ${gm.toFixed(2)}x (target >= 0.8x)`)
  if (redisGate !== undefined) {
    row('gate GET /auth, Redis', r, b)
    notes.push(`GET /auth (Redis) vs baseline: ${median(r.map((x, i) => x.rps / b[i]!.rps)).toFixed(2)}x (target >= 0.5x)`)
  }
  bad = [...b, ...g, ...r].reduce((s, x) => s + x.bad, 0)
  baseline.stop(); gate.stop(); redisGate?.stop()
} else {
  const upstream = await startAccessServer('upstream')
  const upUrl = `http://127.0.0.1:${upstream.port}`
  const baseline = await startAccessServer('proxy', upUrl)
  const gate = await grantedGate(['--upstream', upUrl])
  const d: Load[] = []; const b: Load[] = []; const g: Load[] = []
  for (let i = 0; i < values.rounds; i++) {
    d.push(await load(upstream, false, PATH))
    b.push(await load(baseline, true, PATH))
    g.push(await load(gate, true, PATH))
  }
  row('upstream called directly (plain HTTP, for the record)', d, b)
  const bm = row('bare node:https + undici proxy, signs (baseline)', b)
  const gm = row('gate --upstream', g, b)
  notes.push(`proxy throughput vs baseline: ${median(g.map((x, i) => x.rps / b[i]!.rps)).toFixed(2)}x (target >= 0.8x); p99 ${gm.p99} ms vs ${bm.p99} ms = ${(gm.p99 / Math.max(1, bm.p99)).toFixed(2)}x (target <= 1.25x)`)
  bad = [...b, ...g, ...d].reduce((s, x) => s + x.bad, 0)
  upstream.stop(); baseline.stop(); gate.stop()
}
console.log(`bench:${values.mode}  ${machine()}  ${values.connections} connections, keep-alive, mTLS; ${values.rounds} alternating rounds of ${values.duration} s, medians`)
console.log(table(rows))
for (const n of notes) console.log(n)
console.log(`the signature every row pays: ${signUs.toFixed(1)} us per X-AOG-Agent (${signer.alg}, in this process)`)
if (bad > 0) console.log(`WARNING: ${bad} responses were errors or not 2xx: the ratios compare other work and are not valid`)
process.exit(bad > 0 ? 1 : 0)
