/** Spawn the built CLIs (npm test's pretest step builds dist/). */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { ROOT } from './pki.js'

export const SERVER = join(ROOT, 'dist', 'bin', 'aog-server.js')
export const AGENT = join(ROOT, 'dist', 'bin', 'aog-agent.js')
if (!existsSync(SERVER)) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)')

export interface Run { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Run a command to completion. */
export async function run (file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const child = spawn(process.execPath, [file, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += String(d) })
  child.stderr.on('data', (d) => { stderr += String(d) })
  return await new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })))
}

export interface Server {
  child: ChildProcess
  url: string
  opsUrl: string
  lines: Array<Record<string, unknown>>
  exited: Promise<number | null>
}

/** Start aog-server on free ports and wait for its start-up line. */
export async function startServer (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Server> {
  const child = spawn(process.execPath, [SERVER, '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: Array<Record<string, unknown>> = []
  let stderr = ''
  child.stderr!.on('data', (d) => { stderr += String(d) })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const rl = createInterface({ input: child.stdout! })
  const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
    rl.on('line', (l) => {
      const j = JSON.parse(l) as Record<string, unknown>
      lines.push(j)
      if (j.msg === 'aog gate listening') resolve(j)
    })
    void exited.then((code) => reject(new Error(`aog-server exited with ${code}: ${stderr}`)))
    setTimeout(() => reject(new Error(`aog-server did not log its start-up line within 20 s: ${stderr}`)), 20_000).unref()
  })
  const gate = String(started.gate).replace('127.0.0.1', 'localhost')
  return { child, url: gate, opsUrl: String(started.ops), lines, exited }
}

/** Resolves once the gate's /readyz answers 200, as a load balancer waits before sending it traffic. */
export async function waitReady (opsUrl: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      if ((await fetch(`${opsUrl}/readyz`)).status === 200) return
    } catch { /* not listening yet */ }
    if (Date.now() > end) throw new Error(`${opsUrl}/readyz did not answer 200 within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
