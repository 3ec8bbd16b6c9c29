/**
 * Issue 21, defect 6 through the real CLI: `npm start` stops on SIGTERM; --dev writes its PKI under the
 * working directory (or --dev-dir), never into the package.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { AGENT, SERVER, run, type Run } from '../helpers/spawn.js'
import { DEV, ROOT } from '../helpers/pki.js'

const dev = (f: string): string => join(DEV, f)
const agentArgs = (url: string, dir: string): string[] => ['--url', url, '--cert', join(dir, 'agent.pem'), '--key', join(dir, 'agent-key.pem'), '--ca', join(dir, 'ca.pem')]
const tmp = (): string => mkdtempSync(join(tmpdir(), 'aog-cli-'))

/** Run aog-server in a given working directory. */
async function runIn (cwd: string, args: string[]): Promise<Run> {
  const child = spawn(process.execPath, [SERVER, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += String(d) })
  child.stderr.on('data', (d) => { stderr += String(d) })
  return await new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })))
}

/** Every descendant of a process (Linux /proc). */
function descendants (pid: number): number[] {
  const out: number[] = []
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let kids = ''
    try { kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8') } catch { continue }
    for (const k of kids.split(' ').filter((x) => x !== '').map(Number)) out.push(k, ...descendants(k))
  }
  return out
}

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true } catch { return false }
}

async function portOpen (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true) })
    s.on('error', () => resolve(false))
  })
}

/** Wait for the gate's start-up line on a child's stdout (npm prints its banner first). */
async function listening (child: ChildProcess): Promise<Record<string, unknown>> {
  let stderr = ''
  child.stderr!.on('data', (d) => { stderr += String(d) })
  const rl = createInterface({ input: child.stdout! })
  return await new Promise((resolve, reject) => {
    rl.on('line', (l) => { if (l.includes('"aog gate listening"')) resolve(JSON.parse(l)) })
    child.on('exit', (code) => reject(new Error(`exited with ${code}: ${stderr}`)))
    setTimeout(() => reject(new Error(`no start-up line within 60 s: ${stderr}`)), 60_000).unref()
  })
}

t.test('defect 6: SIGTERM to `npm start` stops the gate', async (t) => {
  const dir = tmp()
  writeFileSync(join(dir, 'c.json'), JSON.stringify({ listen: '127.0.0.1:0', opsListen: '127.0.0.1:0', workers: 1, iterations: 4096, checkpointInterval: 256 }))
  // --ignore-scripts: not the prestart build (dist/ is built), the start script itself as npm runs it.
  const npm = spawn('npm', ['start', '--ignore-scripts', '--', '--config', join(dir, 'c.json')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  const family: number[] = []
  t.teardown(() => { for (const pid of family) if (alive(pid)) process.kill(pid, 'SIGKILL') })
  const started = await listening(npm)
  family.push(...descendants(npm.pid!))
  t.ok(family.length > 0, 'npm runs the gate as its child')
  const port = Number(new URL(String(started.gate)).port)
  t.ok(await portOpen(port), 'the gate serves')
  const exited = new Promise((resolve) => npm.on('exit', resolve))
  npm.kill('SIGTERM')
  await exited
  const end = Date.now() + 10_000
  while ((family.some(alive) || await portOpen(port)) && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 100))
  t.same(family.filter(alive), [], 'no process of npm start is left')
  t.notOk(await portOpen(port), 'the gate port is closed')
})

/** Names and modification times of the package's dev PKI, to show --dev did not touch it. */
function snapshot (): string {
  return existsSync(DEV) ? readdirSync(DEV).sort().map((f) => `${f}:${statSync(join(DEV, f)).mtimeMs}`).join(',') : 'absent'
}

t.test('defect 6: --dev writes its PKI under the working directory (or --dev-dir), never into the package', async (t) => {
  const before = snapshot()
  const cwd = tmp()
  const child = spawn(process.execPath, [SERVER, '--dev', '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', '--workers', '1', '--iterations', '4096', '--checkpoint-interval', '256'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const started = await listening(child)
  const mine = join(cwd, 'certs', 'dev')
  for (const f of ['ca.pem', 'server.pem', 'server-key.pem', 'agent.pem', 'crl.pem', 'forward-secret']) t.ok(existsSync(join(mine, f)), `${f} under the working directory`)
  t.not(readFileSync(join(mine, 'ca.pem'), 'utf8'), readFileSync(dev('ca.pem'), 'utf8'), 'a new CA, not the package\'s')
  const ok = await run(AGENT, agentArgs(String(started.gate).replace('127.0.0.1', 'localhost'), mine))
  t.equal(ok.code, 0, 'an agent of the new dev PKI passes: the gate uses it')
  child.kill('SIGTERM')

  const other = await runIn(cwd, ['check-config', '--dev', '--dev-dir', 'elsewhere'])
  t.equal(other.code, 2, 'check-config does not generate the dev PKI')
  t.match(other.stderr, new RegExp(`tlsCert: ${join(cwd, 'elsewhere', 'server.pem').replace(/[.]/g, '\\.')} does not exist`))
  const child2 = spawn(process.execPath, [SERVER, '--dev', '--dev-dir', 'pki', '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', '--workers', '1'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child2.kill('SIGKILL') })
  await listening(child2)
  t.ok(existsSync(join(cwd, 'pki', 'server.pem')), '--dev-dir, relative to the working directory')
  child2.kill('SIGTERM')
  t.equal(snapshot(), before, 'the package\'s certs/dev is untouched')
})
