/**
 * npm run profile — a CPU profile of the gate under bench:http's GET /challenge load: starts the
 * gate with `node --cpu-prof`, loads it with autocannon (mTLS, keep-alive), stops it with SIGTERM,
 * and prints the profile's path (open it in Chrome DevTools → Performance, or speedscope) and the
 * top functions by self time. clinic is not used: unmaintained and inaccurate on Node 20.
 * `--path /task` profiles POST /task instead, with a well-formed submission (64 checkpoints) of a
 * nonce that was never issued: the 404 path of an identity guessing nonces.
 * `--gate-args` adds or overrides gate options, e.g. `--gate-args='--rate-burst 1 --rate-per-second 1'`
 * to profile the refusal path (429) instead.
 *   npm run profile [-- --duration 10 --path /challenge --gate-args='--workers 1']
 */
import autocannon from 'autocannon'
import { spawn } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { X509Certificate } from 'node:crypto'
import { fingerprintOf } from '../lib/identity/tls.js'
import { BENCH_GATE_ARGS, DEV, GATE_NODE_ARGS, ROOT, splitArgs, tracked } from './servers.js'
import { benchArgs } from './args.js'

const values = benchArgs('profile', 'A CPU profile (node --cpu-prof) of the gate under GET /challenge load, or POST /task with --path /task; prints its path and the top functions by self time.', {
  duration: { type: 'number', default: 10, help: 'seconds of load' },
  path: { type: 'string', default: '/challenge', help: 'the path to load: /challenge, or /task (well-formed submissions of never-issued nonces)', check: (v) => v.startsWith('/') ? undefined : 'expected a path starting with /' },
  'gate-args': { type: 'string', default: '', help: "gate options added to the bench's, e.g. '--rate-burst 1 --rate-per-second 1'" },
})
const dir = join(ROOT, 'bench', 'results')
mkdirSync(dir, { recursive: true })
const child = tracked(spawn(process.execPath, [...GATE_NODE_ARGS, '--cpu-prof', `--cpu-prof-dir=${dir}`, join(ROOT, 'dist', 'bin', 'aog-server.js'), '--dev',
  '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', ...BENCH_GATE_ARGS, ...splitArgs(values['gate-args'])], { stdio: ['ignore', 'pipe', 'inherit'] }))
const port = await new Promise<number>((resolve) => {
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const j = JSON.parse(l) as { msg?: string, gate?: string }
    if (j.msg === 'aog gate listening') resolve(Number(new URL(j.gate!).port))
  })
})
const tlsOptions = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }
const task = values.path === '/task'
  ? {
      method: 'POST' as const,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        nonce: 'AAAAAAAAAAAAAAAAAAAAAA',
        client_fingerprint: fingerprintOf(new X509Certificate(tlsOptions.cert).raw),
        result_hash: '0'.repeat(64),
        runtime_ms: 900,
        checkpoints: Array.from({ length: 64 }, () => '1'.repeat(64)),
      }),
    }
  : {}
const r = await autocannon({ url: `https://localhost:${port}${values.path}`, connections: 16, duration: values.duration, tlsOptions, ...task } as autocannon.Options)
const exited = new Promise((resolve) => child.once('exit', resolve))
child.kill('SIGTERM')
await exited
const newest = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(dir, f)).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0]
console.log(`${Math.round(r.requests.average)} req/s on ${values.path} (${r.non2xx} not 2xx); profile: ${newest}`)
if (newest !== undefined) {
  interface Node { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number }
  const prof = JSON.parse(readFileSync(newest, 'utf8')) as { nodes: Node[] }
  const self = new Map<string, number>()
  let total = 0
  for (const n of prof.nodes) {
    const key = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(dist|lib)\//, '$1/')}:${n.callFrame.lineNumber + 1}`
    self.set(key, (self.get(key) ?? 0) + (n.hitCount ?? 0))
    total += n.hitCount ?? 0
  }
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`)
}
process.exit(0)
