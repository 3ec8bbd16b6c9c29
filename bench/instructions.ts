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
 *
 * `--functions N` also prints the N functions whose marginal instructions per request differ most
 * between the gate and the baseline (callgrind_annotate's per-function counts; the servers run
 * with `node --perf-basic-prof`, whose map names the JIT-compiled JavaScript that callgrind only
 * knows by address). This is where to look for the gate's own costs; note that counts of one
 * version move by several thousand between runs (JIT compilation and garbage collection falling
 * in the measured window), so compare functions, not totals, across two runs.
 *   npm run bench:instructions [-- --requests 3000 --warm 3000 --connections 16 --functions 40]
 */
import autocannon from 'autocannon'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BENCH_GATE_ARGS, DEV, GATE_NODE_ARGS, ROOT, freePort } from './servers.js'
import { benchArgs } from './args.js'
import { machine, table } from './util.js'

const values = benchArgs('bench:instructions', 'User-space instructions per GET /challenge on the gate against a request on the bare node:https baseline, counted by callgrind (needs valgrind).', {
  requests: { type: 'number', default: 3000, help: 'requests of the smaller measured load (the larger has 3x as many)' },
  warm: { type: 'number', default: 3000, help: 'requests of each of the two warm-up loads' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
  functions: { type: 'number', default: 0, min: 0, help: 'also list the N functions whose marginal instructions per request differ most' },
})
const functions = values.functions
const requests = values.requests
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
  const r = await autocannon({ url: `https://localhost:${port}${path}`, connections: values.connections, amount, timeout: 120, tlsOptions } as autocannon.Options)
  if (r.non2xx > 0 || r.errors > 0) throw new Error(`${r.non2xx} non-2xx answers and ${r.errors} errors from ${path}`)
}

/** Instructions (Ir) in a callgrind output file. */
function totalIr (file: string): number {
  const m = /^(?:summary|totals):\s*(\d+)/m.exec(readFileSync(file, 'utf8'))
  if (m === null) throw new Error(`no instruction total in ${file}`)
  return Number(m[1])
}

interface Count { perRequest: number, marginal: number, byFunction: Map<string, number> }

/** JIT code ranges from a `--perf-basic-prof` map (`start size name` in hex), sorted by start. */
function perfMap (file: string): Array<{ start: number, end: number, name: string }> {
  if (!existsSync(file)) return []
  const ranges: Array<{ start: number, end: number, name: string }> = []
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line)
    if (m !== null) ranges.push({ start: parseInt(m[1]!, 16), end: parseInt(m[1]!, 16) + parseInt(m[2]!, 16), name: m[3]! })
  }
  return ranges.sort((a, b) => a.start - b.start)
}

/**
 * Instructions per function in a callgrind output file (callgrind_annotate, exclusive counts),
 * JIT code named from the perf map: callgrind calls code it has no symbol for by its address.
 */
function perFunction (file: string, ranges: Array<{ start: number, end: number, name: string }>): Map<string, number> {
  const text = execFileSync('callgrind_annotate', ['--inclusive=no', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$/.exec(line)
    if (m === null || m[2]!.includes('PROGRAM TOTALS')) continue
    let name = m[2]!.replace(/^\?\?\?:/, '')
    const address = /^0x([0-9a-f]+)/.exec(name)
    if (address !== null) {
      const at = parseInt(address[1]!, 16)
      let lo = 0
      let hi = ranges.length - 1
      let hit: string | undefined
      while (lo <= hi) {
        const mid = (lo + hi) >> 1
        const r = ranges[mid]!
        if (at < r.start) hi = mid - 1
        else if (at >= r.end) lo = mid + 1
        else { hit = r.name; break }
      }
      name = hit === undefined ? 'JIT code (unnamed)' : `JIT ${hit.replace(/file:\/\/\S*\/dist\//, '')}`
    }
    out.set(name, (out.get(name) ?? 0) + Number(m[1]!.replace(/,/g, '')))
  }
  return out
}

async function count (name: string, path: string, args: (port: number) => string[]): Promise<Count> {
  const dir = mkdtempSync(join(tmpdir(), 'aog-callgrind-'))
  const port = await freePort()
  const out = join(dir, 'callgrind.out')
  const child = spawn('valgrind', ['--tool=callgrind', '--smc-check=all-non-file', '--instr-atstart=no', `--callgrind-out-file=${out}`,
    process.execPath, ...(functions > 0 ? ['--perf-basic-prof'] : []), ...args(port)], { stdio: ['ignore', 'ignore', 'ignore'], cwd: ROOT })
  // valgrind runs node in its own process: the map is named after the spawned pid.
  const map = `/tmp/perf-${child.pid}.map`
  try {
    await listening(port, child)
    await load(port, path, values.warm)
    await load(port, path, values.warm)
    const control = (cmd: string): void => { execFileSync('callgrind_control', [cmd, String(child.pid)], { stdio: 'ignore' }) }
    control('--instr=on')
    await load(port, path, requests)
    control('--dump')
    await load(port, path, 3 * requests)
    control('--dump')
    const a = totalIr(`${out}.1`)
    const b = totalIr(`${out}.2`)
    console.error(`${name}: ${a} instructions for ${requests} requests, ${b} for ${3 * requests}`)
    const byFunction = new Map<string, number>()
    if (functions > 0) {
      const ranges = perfMap(map)
      const first = perFunction(`${out}.1`, ranges)
      for (const [f, n] of perFunction(`${out}.2`, ranges)) byFunction.set(f, (n - (first.get(f) ?? 0)) / (2 * requests))
    }
    return { perRequest: b / (3 * requests), marginal: (b - a) / (2 * requests), byFunction }
  } finally {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
    rmSync(map, { force: true })
  }
}

const base = await count('baseline', '/', (port) => [...GATE_NODE_ARGS, join(ROOT, 'dist', 'bench', 'baseline-server.js'), DEV, '--port', String(port)])
const opsPort = await freePort()
const gate = await count('gate', '/challenge', (port) => [...GATE_NODE_ARGS, join(ROOT, 'dist', 'bin', 'aog-server.js'), '--dev', '--listen', `127.0.0.1:${port}`,
  '--ops-listen', `127.0.0.1:${opsPort}`, ...BENCH_GATE_ARGS])
const k = (x: number): string => `${(x / 1000).toFixed(1)}k`
console.log(`bench:instructions  ${machine()}  callgrind, ${values.connections} keep-alive mTLS connections, ${requests} and ${3 * requests} requests`)
console.log(table([
  { target: 'bare node:https (baseline)', 'instructions/request': k(base.perRequest), 'marginal instructions/request': k(base.marginal), ratio: '1.00x' },
  { target: 'gate GET /challenge', 'instructions/request': k(gate.perRequest), 'marginal instructions/request': k(gate.marginal), ratio: `${(gate.perRequest / base.perRequest).toFixed(2)}x (marginal ${(gate.marginal / base.marginal).toFixed(2)}x)` },
]))
if (functions > 0) {
  const names = new Set([...base.byFunction.keys(), ...gate.byFunction.keys()])
  const rows = [...names].map((f) => ({ f, g: gate.byFunction.get(f) ?? 0, b: base.byFunction.get(f) ?? 0 }))
    .sort((x, y) => Math.abs(y.g - y.b) - Math.abs(x.g - x.b)).slice(0, functions)
  console.log(`\nthe ${functions} functions whose marginal instructions per request differ most (gate - baseline)`)
  console.log(table(rows.map((r) => ({
    'gate - baseline': Math.round(r.g - r.b),
    gate: Math.round(r.g),
    baseline: Math.round(r.b),
    function: r.f.length > 110 ? `${r.f.slice(0, 107)}...` : r.f,
  }))))
}
process.exit(0)
