/**
 * bench:instructions — what one GET /challenge costs the gate in CPU instructions, next to what one
 * request costs the bare node:https baseline (bench/baseline-server.ts), counted by valgrind's
 * callgrind. Instruction counts do not depend on what else the machine is doing, so this figure is
 * the same from run to run on a shared, noisy machine where requests per second move by ±30%;
 * it counts user-space work only (the kernel's share, TCP and wake-ups, is not in it), so it
 * complements bench:http and does not replace it.
 *
 * Each server runs under callgrind with instrumentation off; after two warm-up loads of `--warm`
 * requests (the JIT settles), instrumentation is switched on for a load of `--requests` requests
 * and then one of 3 × `--requests`, each dumped on its own. The table gives instructions per
 * request of the larger load, and the marginal cost (difference of the two loads over their
 * difference in requests), in which the TLS handshakes of each load's new connections cancel out.
 * Needs valgrind (Debian: `apt-get install valgrind`); takes a few minutes (valgrind runs the
 * server ~50 times slower).
 *   npm run bench:instructions [-- --requests 3000 --warm 3000 --connections 16]
 */
import autocannon from 'autocannon'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BENCH_GATE_ARGS, DEV, ROOT, freePort } from './servers.js'
import { machine, table } from './util.js'

const { values } = parseArgs({ options: {
  requests: { type: 'string', default: '3000' },
  warm: { type: 'string', default: '3000' },
  connections: { type: 'string', default: '16' },
} })
const requests = Number(values.requests)
const tlsOptions = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }

try {
  execFileSync('valgrind', ['--version'], { stdio: 'ignore' })
  execFileSync('callgrind_control', ['--version'], { stdio: 'ignore' })
} catch {
  console.error('bench:instructions needs valgrind and callgrind_control, which are not installed here (Debian: apt-get install valgrind)')
  process.exit(1)
}

async function listening (port: number, child: ChildProcess): Promise<void> {
  const end = Date.now() + 180_000
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => { resolve(false) })
    })
    if (ok) return
    if (child.exitCode !== null || Date.now() > end) throw new Error('the server under valgrind did not start')
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
}

async function load (port: number, path: string, amount: number): Promise<void> {
  const r = await autocannon({ url: `https://localhost:${port}${path}`, connections: Number(values.connections), amount, timeout: 120, tlsOptions } as autocannon.Options)
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${r.non2xx} non-2xx answers and ${r.errors} errors from ${path}`)
}

/** Instructions (Ir) in a callgrind output file. */
function totalIr (file: string): number {
  const m = /^(?:summary|totals):\s*(\d+)/m.exec(readFileSync(file, 'utf8'))
  if (m === null) throw new Error(`no instruction total in ${file}`)
  return Number(m[1])
}

interface Count { perRequest: number, marginal: number }

async function count (name: string, path: string, args: (port: number) => string[]): Promise<Count> {
  const dir = mkdtempSync(join(tmpdir(), 'aog-callgrind-'))
  const port = await freePort()
  const out = join(dir, 'callgrind.out')
  const child = spawn('valgrind', ['--tool=callgrind', '--smc-check=all-non-file', '--instr-atstart=no', `--callgrind-out-file=${out}`,
    process.execPath, ...args(port)], { stdio: ['ignore', 'ignore', 'ignore'], cwd: ROOT })
  try {
    await listening(port, child)
    await load(port, path, Number(values.warm))
    await load(port, path, Number(values.warm))
    const control = (cmd: string): void => { execFileSync('callgrind_control', [cmd, String(child.pid)], { stdio: 'ignore' }) }
    control('--instr=on')
    await load(port, path, requests)
    control('--dump')
    await load(port, path, 3 * requests)
    control('--dump')
    const a = totalIr(`${out}.1`)
    const b = totalIr(`${out}.2`)
    console.error(`${name}: ${a} instructions for ${requests} requests, ${b} for ${3 * requests}`)
    return { perRequest: b / (3 * requests), marginal: (b - a) / (2 * requests) }
  } finally {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}

const base = await count('baseline', '/', (port) => [join(ROOT, 'dist', 'bench', 'baseline-server.js'), DEV, '--port', String(port)])
const opsPort = await freePort()
const gate = await count('gate', '/challenge', (port) => [join(ROOT, 'dist', 'bin', 'aog-server.js'), '--dev', '--listen', `127.0.0.1:${port}`,
  '--ops-listen', `127.0.0.1:${opsPort}`, ...BENCH_GATE_ARGS])
const k = (x: number): string => `${(x / 1000).toFixed(1)}k`
console.log(`bench:instructions  ${machine()}  callgrind, ${values.connections} keep-alive mTLS connections, ${requests} and ${3 * requests} requests`)
console.log(table([
  { target: 'bare node:https (baseline)', 'instructions/request': k(base.perRequest), 'marginal instructions/request': k(base.marginal), ratio: '1.00x' },
  { target: 'gate GET /challenge', 'instructions/request': k(gate.perRequest), 'marginal instructions/request': k(gate.marginal), ratio: `${(gate.perRequest / base.perRequest).toFixed(2)}x (marginal ${(gate.marginal / base.marginal).toFixed(2)}x)` },
]))
process.exit(0)
