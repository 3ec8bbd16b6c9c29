/**
 * Issue 21, defect 5: a rolling restart through nginx loses no pass. Two gate processes
 * (dist/bin/aog-server.js, forwarded mode, one Redis) behind a real nginx with the generated
 * configuration; agents pass continuously (GET /challenge through nginx, POST /task through nginx,
 * each free to land on either gate) while each gate in turn gets SIGTERM, exits, starts again on
 * its port and is ready. First the shipped configuration before the fix (no drain, nginx's default
 * retries and idle timeout), counted; then the fixed one, where every pass must succeed.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { request } from 'undici'
import { Redis } from 'ioredis'
import { startNginx, NGINX, type Nginx } from '../helpers/nginx.js'
import { startServer, type Server } from '../helpers/spawn.js'
import { DEV, agentFiles } from '../helpers/pki.js'
import { freePort, requireRedis, REDIS_URL } from '../helpers/redis.js'
import { hasTool, missing } from '../helpers/tools.js'
import { outcome, sleep } from '../helpers/outcome.js'
import { createAgent, pass, type AogAgent } from '../../lib/client/agent.js'

if (!hasTool(NGINX)) throw new Error(missing('nginx', 'nginx libnginx-mod-http-js'))
await requireRedis()

const AGENTS = 4
/** At least nginx's fail_timeout (10 s) and more than its upstream keepalive_timeout (4 s): docs/operations.md. */
const DRAIN_MS = 10_000

interface Counts { attempts: number, passes: number, failures: Record<string, number> }

/** The gate's flags: forwarded mode, the shared Redis under a prefix of this run, small chains. */
function gateArgs (secretFile: string, prefix: string, port: number, drainMs: number): string[] {
  return ['--mode', 'forwarded', '--client-ca', join(DEV, 'ca.pem'), '--forward-secret-file', secretFile,
    '--store', 'redis', '--redis-url', REDIS_URL, '--redis-prefix', prefix,
    '--iterations', '4096', '--checkpoint-interval', '256', '--min-ns-per-iteration', '0', '--workers', '1',
    '--rate-burst', '100000', '--rate-per-second', '100000', '--drain-delay-ms', String(drainMs),
    // After startServer's own --listen 127.0.0.1:0: the last one counts, a fixed port nginx knows.
    '--listen', `127.0.0.1:${port}`]
}

async function waitReady (s: Server): Promise<void> {
  const end = Date.now() + 15_000
  for (;;) {
    try {
      const res = await request(`${s.opsUrl}/readyz`)
      await res.body.dump()
      if (res.statusCode === 200) return
    } catch {}
    if (Date.now() > end) throw new Error(`gate ${s.url} not ready within 15 s`)
    await sleep(100)
  }
}

/** Requests this gate process has answered (its request log lines). */
function served (s: Server): number {
  return s.lines.filter((l) => l.msg === 'request').length
}

/** Agents passing through nginx until `stop` is set, each pass booked by its outcome. */
function runAgents (t: Test, nginx: Nginx, counts: Counts, stop: { now: boolean }): Promise<void> {
  const agents: AogAgent[] = Array.from({ length: AGENTS }, () => createAgent({ url: nginx.url, ...agentFiles('agent'), connections: 2 }))
  t.teardown(async () => { await Promise.all(agents.map((a) => a.close())) })
  return Promise.all(agents.map(async (agent) => {
    while (!stop.now) {
      counts.attempts++
      const o = await outcome(pass(agent))
      if (o === 'accepted') counts.passes++
      else counts.failures[o] = (counts.failures[o] ?? 0) + 1
      await sleep(10)
    }
  })).then(() => {})
}

/**
 * Restart each gate in turn: SIGTERM, wait for its exit, start it again on its port, wait until it
 * is ready, then the next. nginx leaves an instance whose connections were refused out for
 * fail_timeout (10 s): the next one's drain must outlast that, or nginx is left with none.
 */
async function rollingRestart (t: Test, gates: Server[], args: (i: number) => string[], all: Server[]): Promise<number[]> {
  const downMs: number[] = []
  for (let i = 0; i < gates.length; i++) {
    const old = gates[i]!
    const t0 = Date.now()
    old.child.kill('SIGTERM')
    t.equal(await old.exited, 0, `gate ${i} exits 0 after SIGTERM`)
    const s = await startServer(args(i))
    t.teardown(() => { s.child.kill('SIGKILL') })
    gates[i] = s
    all.push(s)
    await waitReady(s)
    downMs.push(Date.now() - t0)
  }
  return downMs
}

/** Until nginx sends each restarted gate requests again (at most fail_timeout and a bit). */
async function untilServing (gates: Server[]): Promise<boolean> {
  const end = Date.now() + 15_000
  while (gates.some((g) => served(g) === 0)) {
    if (Date.now() > end) return false
    await sleep(100)
  }
  return true
}

/** One run: two gates, nginx, agents passing, each gate restarted in turn. */
async function scenario (t: Test, o: { drainMs: number, edit?: (conf: string) => string }): Promise<Counts & { downMs: number[], nginxErrors: string, gateProblems: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'aog-rolling-'))
  const secretFile = join(dir, 'secret')
  writeFileSync(secretFile, `${randomBytes(24).toString('hex')}\n`)
  const prefix = `aog-roll-${randomBytes(4).toString('hex')}:`
  t.teardown(async () => {
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(`${prefix}*`)
    if (keys.length > 0) await r.del(...keys)
    r.disconnect()
  })
  const ports = [await freePort(), await freePort()]
  const args = (i: number): string[] => gateArgs(secretFile, prefix, ports[i]!, o.drainMs)
  const gates = await Promise.all(ports.map(async (_p, i) => await startServer(args(i))))
  t.teardown(() => { for (const g of gates) g.child.kill('SIGKILL') })
  const all = [...gates]
  await Promise.all(gates.map(waitReady))
  const nginx = await startNginx({ upstreamPort: ports[0]!, morePorts: [ports[1]!], secretFile, ...(o.edit === undefined ? {} : { edit: o.edit }) })
  t.teardown(() => nginx.stop())

  const counts: Counts = { attempts: 0, passes: 0, failures: {} }
  const stop = { now: false }
  const agents = runAgents(t, nginx, counts, stop)
  await sleep(1000) // steady state first: both gates serving, nginx's connections to both kept alive
  t.ok(gates.every((g) => served(g) > 0), 'before the restarts both gates serve')
  const downMs = await rollingRestart(t, gates, args, all)
  t.ok(await untilServing(gates), 'nginx sends both restarted gates requests again')
  stop.now = true
  await agents
  // What the gates themselves refused or warned about (every process, the stopped ones included).
  const gateProblems = all.flatMap((g, i) => g.lines.filter((l) => (typeof l.status === 'number' && l.status >= 500) || Number(l.level) >= 40)
    .map((l) => `process ${i}: ${String(l.msg)} ${String(l.route ?? '')} ${String(l.status ?? '')} ${String(l.outcome ?? l.err ?? '')}`))
  return { ...counts, downMs, nginxErrors: nginx.errors(), gateProblems }
}

function report (t: Test, name: string, r: Awaited<ReturnType<typeof scenario>>): void {
  const failed = Object.values(r.failures).reduce((a, b) => a + b, 0)
  t.comment(`${name}: ${r.attempts} attempts, ${r.passes} passes, ${failed} failed ${JSON.stringify(r.failures)}; each gate back in ${r.downMs.join(', ')} ms`)
  const upstreamErrors = r.nginxErrors.split('\n').filter((l) => /upstream|no live/.test(l) && /\[error\]/.test(l))
  if (r.gateProblems.length > 0) t.comment(`${name}: the gates logged ${r.gateProblems.length} problems, e.g. ${r.gateProblems.slice(0, 5).join('; ')}`)
  if (process.env.AOG_TEST_VERBOSE !== undefined) for (const l of upstreamErrors) t.comment(l)
  t.comment(`${name}: nginx logged ${upstreamErrors.length} upstream errors${upstreamErrors.length === 0 ? '' : `, e.g. ${upstreamErrors[0]!.replace(/^.*\[error\] [0-9#*]+: /, '').slice(0, 160)}`}`)
}

/** The configuration before the fix: none of the retry, idle-timeout and problem+json lines (nginx's defaults apply). */
function beforeTheFix (conf: string): string {
  return conf.split('\n').filter((l) => !/^\s*(proxy_next_upstream|proxy_connect_timeout|keepalive_timeout|error_page 502 503 504)/.test(l)).join('\n')
}

t.test('before the fix (no drain, nginx defaults): a rolling restart loses passes to nginx\'s HTML 502', async (t) => {
  const r = await scenario(t, { drainMs: 0, edit: beforeTheFix })
  report(t, 'before', r)
  t.ok(r.passes > 0, 'agents passed through nginx')
  // Deterministic: the first gate is still left out (fail_timeout) when the second stops accepting.
  t.ok((r.failures['502 UNKNOWN'] ?? 0) > 0, 'the defect: passes lost to nginx\'s own 502 page')
})

t.test('the fix (drain, next upstream, nginx closes idle connections first): a rolling restart loses no pass', async (t) => {
  const r = await scenario(t, { drainMs: DRAIN_MS })
  report(t, 'fixed', r)
  t.ok(r.attempts >= 100, `agents kept passing throughout (${r.attempts} attempts)`)
  t.same(r.failures, {}, 'zero failed passes')
  t.equal(r.passes, r.attempts)
  t.ok(r.downMs.every((ms) => ms >= DRAIN_MS), 'each gate drained for --drain-delay-ms before it exited')
})
