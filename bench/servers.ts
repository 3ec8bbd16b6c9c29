/** Start the baseline server and the gate as child processes (one core each on a 2-core machine). */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { packageRoot } from '../lib/paths.js'

export const ROOT = packageRoot()
export const DEV = join(ROOT, 'certs', 'dev')

export interface Child { child: ChildProcess, port: number, stop: () => void }

async function firstLine (child: ChildProcess, pick: (line: string) => number | undefined): Promise<number> {
  return await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! })
    rl.on('line', (l) => { const p = pick(l); if (p !== undefined) resolve(p) })
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)))
  })
}

export async function startBaseline (): Promise<Child> {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'baseline-server.js'), DEV], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await firstLine(child, (l) => Number(l) || undefined)
  return { child, port, stop: () => child.kill('SIGTERM') }
}

/** The gate on the memory store, logging at info to /dev/null (the per-request log line is part of its cost). */
export async function startGateProcess (args: string[] = []): Promise<Child> {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'bin', 'aog-server.js'), '--dev', '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0',
    '--rate-burst', '1000000000', '--rate-per-second', '1000000000', ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  let logging = true
  const port = await firstLine(child, (l) => {
    if (!logging) return undefined
    const j = JSON.parse(l) as { msg?: string, gate?: string }
    if (j.msg !== 'aog gate listening') return undefined
    logging = false
    return Number(new URL(j.gate!).port)
  })
  child.stdout!.resume() // keep draining the request log
  return { child, port, stop: () => child.kill('SIGTERM') }
}
