/**
 * Shared by the deployment-kit tests (npm run test:deploy): tools, processes, ports, the image's
 * filesystem run through chroot.
 */
import type { Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { connect } from 'node:net'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { hasTool } from '../helpers/tools.js'
import { ROOT } from '../helpers/pki.js'

export { ROOT }
export const DEPLOY = join(ROOT, 'deploy')
export const SERVER = join(ROOT, 'dist', 'bin', 'aog-server.js')
export const AGENT = join(ROOT, 'dist', 'bin', 'aog-agent.js')

/**
 * True when `tool` is on the PATH. Otherwise the test is skipped, loudly on stderr; in CI
 * (CI=true, where .ci/run installs every tool these tests use) a missing tool fails instead.
 */
export function needTool (t: Test, tool: string, pkg: string): boolean {
  if (hasTool(tool)) return true
  const msg = `!!! SKIPPED: ${tool} is not installed (apt-get install ${pkg}); .ci/run installs it, so CI runs this test`
  process.stderr.write(msg + '\n')
  if (process.env.CI === 'true') t.fail(`${tool} is missing in CI (.ci/run should have installed ${pkg})`)
  else t.pass(`${tool} is missing`, { skip: msg })
  return false
}

export interface Done { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string, ms: number }

/** Run a command to completion (stdin closed), with a time limit. */
export async function exec (cmd: string, args: string[], opts: { cwd?: string, env?: NodeJS.ProcessEnv, timeoutMs?: number } = {}): Promise<Done> {
  const t0 = performance.now()
  const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += String(d) })
  child.stderr.on('data', (d) => { stderr += String(d) })
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000)
  return await new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Math.round(performance.now() - t0) })
    })
  })
}

export interface Proc {
  name: string
  child: ChildProcess
  /** Every line of stdout and stderr so far. */
  lines: string[]
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Resolves with the first line matching `re` (rejects if the process exits first or after ms). */
  waitFor (re: RegExp, ms?: number): Promise<string>
  /** SIGTERM (or `signal`), then the exit; SIGKILL after 15 s. */
  stop (signal?: NodeJS.Signals): Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** Start a long-running process; stopped at teardown if still running. */
export function start (t: Test, name: string, cmd: string, args: string[], opts: { cwd?: string, env?: NodeJS.ProcessEnv } = {}): Proc {
  const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const waiters: Array<{ re: RegExp, resolve: (l: string) => void }> = []
  const onLine = (l: string): void => {
    lines.push(l)
    if (process.env.AOG_DEPLOY_VERBOSE === '1') process.stderr.write(`[${name}] ${l}\n`)
    for (const w of [...waiters]) {
      if (w.re.test(l)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(l)
      }
    }
  }
  createInterface({ input: child.stdout! }).on('line', onLine)
  createInterface({ input: child.stderr! }).on('line', onLine)
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }))
    child.on('error', () => resolve({ code: -1, signal: null }))
  })
  const proc: Proc = {
    name,
    child,
    lines,
    exited,
    async waitFor (re, ms = 30_000) {
      const seen = lines.find((l) => re.test(l))
      if (seen !== undefined) return seen
      return await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no line matching ${String(re)} within ${ms} ms:\n${lines.slice(-20).join('\n')}`)), ms)
        waiters.push({ re, resolve: (l) => { clearTimeout(timer); resolve(l) } })
        void exited.then(({ code, signal }) => {
          clearTimeout(timer)
          reject(new Error(`${name} exited (${code ?? signal}) before a line matching ${String(re)}:\n${lines.slice(-20).join('\n')}`))
        })
      })
    },
    async stop (signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal)
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
        const r = await exited
        clearTimeout(timer)
        return r
      }
      return await exited
    },
  }
  t.teardown(async () => { await proc.stop('SIGKILL') })
  return proc
}

/** Resolves once something accepts TCP connections on host:port. */
export async function waitPort (port: number, host = '127.0.0.1', ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host })
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > end) throw new Error(`nothing listens on ${host}:${port} after ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The JSON objects among a process's lines (pino's). */
export function jsonLines (lines: string[]): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = []
  for (const l of lines) {
    if (!l.startsWith('{')) continue
    try { out.push(JSON.parse(l) as Record<string, unknown>) } catch {}
  }
  return out
}
