/** Start the baseline server and the gate as child processes (one core each on a 2-core machine). */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync } from 'node:fs'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { packageRoot } from '../lib/paths.js'

export const ROOT = packageRoot()
export const DEV = join(ROOT, 'certs', 'dev')

export interface Child { child: ChildProcess, port: number, stop: () => void }

/**
 * Node's own options of a gate, as `aog-server` (bin/aog-server.ts's first line) and `npm start` give
 * them; the baseline servers run with them too, so that a ratio compares code, not node's options.
 */
export const GATE_NODE_ARGS: readonly string[] = ['--no-memory-reducer']

/**
 * What every benchmarked gate runs with on top of its defaults: no rate limit (one identity loads
 * it), and a memory-store bound no run reaches (at 25-45k req/s a run issues over a million
 * challenges, each kept 70 s; the default bound of 10^6, a sustained ~14k/s, would turn the last
 * rounds into 503s).
 */
export const BENCH_GATE_ARGS = ['--rate-burst', '1000000000', '--rate-per-second', '1000000000', '--max-challenges', '10000000']

/** A `--gate-args` text as argv: words separated by spaces (a later option overrides an earlier one). */
export function splitArgs (text: string): string[] {
  return text.split(' ').filter((a) => a !== '')
}

/**
 * Every server a bench script starts is stopped when the script exits, however it exits (a failed
 * start, an exception, process.exit): a server left behind would keep its port and skew the next run.
 */
const started = new Set<ChildProcess>()
process.once('exit', () => { for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL') })

/** Track `child` until it exits (see `started`). */
export function tracked (child: ChildProcess): ChildProcess {
  started.add(child)
  child.once('exit', () => started.delete(child))
  return child
}

async function firstLine (child: ChildProcess, pick: (line: string) => number | undefined): Promise<number> {
  return await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! })
    rl.on('line', (l) => { const p = pick(l); if (p !== undefined) resolve(p) })
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)))
  })
}

export async function startBaseline (burnUs = 0): Promise<Child> {
  const child = tracked(spawn(process.execPath, [...GATE_NODE_ARGS, join(ROOT, 'dist', 'bench', 'baseline-server.js'), DEV, ...(burnUs > 0 ? ['--burn-us', String(burnUs)] : [])], { stdio: ['ignore', 'pipe', 'inherit'] }))
  const port = await firstLine(child, (l) => Number(l) || undefined)
  return { child, port, stop: () => child.kill('SIGTERM') }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createNetServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address() as AddressInfo; s.close(() => resolve(port)) })
  })
}

/**
 * The gate (this checkout's build, or the package at `root`) under node with `nodeArgs` (as deployed), on the memory
 * store with BENCH_GATE_ARGS, then `args`, logging at info to /dev/null: the per-request log line is part of
 * its cost, but a pipe read by this process would also cost the load generator's CPU on a small
 * machine. Ready when /readyz answers.
 */
export async function startGateProcess (args: string[] = [], root = ROOT, env: NodeJS.ProcessEnv = process.env, nodeArgs: readonly string[] = GATE_NODE_ARGS): Promise<Child> {
  const port = await freePort()
  const ops = await freePort()
  const devnull = openSync('/dev/null', 'w')
  // Run from ROOT whatever build `root` is: --dev takes this checkout's certs/dev.
  const child = tracked(spawn(process.execPath, [...nodeArgs, join(root, 'dist', 'bin', 'aog-server.js'), '--dev', '--listen', `127.0.0.1:${port}`, '--ops-listen', `127.0.0.1:${ops}`,
    ...BENCH_GATE_ARGS, ...args], { cwd: ROOT, env, stdio: ['ignore', devnull, 'inherit'] }))
  closeSync(devnull)
  const end = Date.now() + 20_000
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${ops}/readyz`)
      if (r.status === 200) break
    } catch { /* not listening yet */ }
    if (Date.now() > end || child.exitCode !== null) throw new Error('the gate did not become ready')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { child, port, stop: () => child.kill('SIGTERM') }
}

/** bench/access-server.ts in `role` (upstream, auth, or proxy in front of `target`). */
export async function startAccessServer (role: 'upstream' | 'auth' | 'proxy', target = ''): Promise<Child> {
  const child = tracked(spawn(process.execPath, [...GATE_NODE_ARGS, join(ROOT, 'dist', 'bench', 'access-server.js'), role, DEV, target], { stdio: ['ignore', 'pipe', 'inherit'] }))
  const port = await firstLine(child, (l) => Number(l) || undefined)
  return { child, port, stop: () => child.kill('SIGTERM') }
}
