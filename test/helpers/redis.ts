/** The real Redis the tests use, and Redis servers (and a Cluster) the harness starts itself. */
import { Redis } from 'ioredis'
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const exec = promisify(execFile)
export const REDIS_URL = process.env.AOG_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

/** Throws a clear error when the machine's Redis is not running (CI starts it). */
export async function requireRedis (): Promise<void> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
  try {
    await r.connect()
    await r.ping()
  } catch (err) {
    throw new Error(`these tests need a Redis at ${REDIS_URL} (redis-server); .ci/run starts one: ${(err as Error).message}`)
  } finally {
    r.disconnect()
  }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

export interface RedisProcess {
  port: number
  url: string
  child: ChildProcess
  /** Start it again on the same port (after stop), with `args` added to its config directives. */
  restart (args?: string[]): Promise<void>
  stop (): Promise<void>
  cli (...args: string[]): Promise<string>
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Until the server on `port` answers PING; fails at once if `child` exits first. */
async function waitPing (port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      const { stdout } = await exec('redis-cli', ['-p', String(port), 'ping'])
      if (stdout.trim() === 'PONG') return
    } catch { /* not up yet */ }
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`redis on ${port} exited before it answered`)
    if (Date.now() > end) throw new Error(`redis on ${port} did not start`)
    await sleep(50)
  }
}

export interface StartRedisOptions {
  /** A Cluster node: its bus port is chosen free too (by default Redis takes port + 10000, which may be taken or above 65535). */
  cluster?: boolean
}

/** Why a start failed: the child's exit, or the end of its log. */
function startFailure (port: number, child: ChildProcess, log: string): string {
  let tail = ''
  try { tail = readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ') } catch { /* no log yet */ }
  const how = child.exitCode !== null ? `exited ${child.exitCode}` : child.signalCode !== null ? `killed by ${child.signalCode}` : 'did not answer PING'
  return `redis on ${port} did not start (${how})${tail === '' ? '' : `: ${tail}`}`
}

/**
 * Start a throwaway redis-server on a free loopback port. `args` are extra config directives.
 * A port can be taken between freePort() and redis-server's bind, so a start that fails is retried on new ports.
 */
export async function startRedis (args: string[] = [], opts: StartRedisOptions = {}): Promise<RedisProcess> {
  const attempts = 4
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const dir = mkdtempSync(join(tmpdir(), `aog-redis-${port}-`))
    const log = join(dir, 'redis.log')
    // No snapshot delay: a replica syncs at once instead of after repl-diskless-sync-delay (5 s).
    const argv = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', log, '--repl-diskless-sync-delay', '0', ...args]
    if (opts.cluster === true) argv.push('--cluster-port', String(await freePort()))
    const child = spawn('redis-server', argv, { stdio: 'ignore' })
    try {
      await waitPing(port, child)
    } catch (err) {
      const message = startFailure(port, child, log)
      await killAndWait(child)
      rmSync(dir, { recursive: true, force: true })
      if (attempt >= attempts) throw new Error(`${message} (after ${attempts} attempts)`, { cause: err })
      continue
    }
    const p: RedisProcess = {
      port,
      url: `redis://127.0.0.1:${port}`,
      child,
      async restart (extra = []) {
        p.child = spawn('redis-server', [...argv, ...extra], { stdio: 'ignore' })
        await waitPing(port, p.child)
      },
      async stop () { await killAndWait(p.child) },
      async cli (...a) {
        const { stdout } = await exec('redis-cli', ['-p', String(port), ...a])
        return stdout.trim()
      },
    }
    process.once('exit', () => { try { p.child.kill('SIGKILL') } catch {} ; rmSync(dir, { recursive: true, force: true }) })
    return p
  }
}

async function killAndWait (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGCONT')
  child.kill('SIGKILL')
  await exited
}

export interface RedisCluster {
  nodes: RedisProcess[]
  /** host:port,host:port,… for --redis-cluster */
  seeds: string
  stop (): Promise<void>
}

/** A 3-master Redis Cluster on free loopback ports, created with redis-cli --cluster create. */
export async function startCluster (masters = 3): Promise<RedisCluster> {
  const nodes: RedisProcess[] = []
  const stop = async (): Promise<void> => { await Promise.all(nodes.map(async (n) => await n.stop())) }
  try {
    for (let i = 0; i < masters; i++) {
      nodes.push(await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`, '--cluster-node-timeout', '2000'], { cluster: true }))
    }
    await exec('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'])
    const end = Date.now() + 15_000
    for (;;) {
      const states = await Promise.all(nodes.map(async (n) => await n.cli('cluster', 'info')))
      if (states.every((s) => s.includes('cluster_state:ok'))) break
      if (Date.now() > end) throw new Error('the cluster did not become ok')
      await sleep(100)
    }
  } catch (err) {
    // The nodes already started would keep the test process alive until its timeout.
    await stop()
    throw err
  }
  return { nodes, seeds: nodes.map((n) => `127.0.0.1:${n.port}`).join(','), stop }
}

export interface SentinelProcess {
  port: number
  child: ChildProcess
  cli (...args: string[]): Promise<string>
  stop (): void
}

export interface SentinelOptions {
  /** sentinel failover-timeout (ms; default 5000). */
  failoverTimeoutMs?: number
  /** The quorum (default 1). */
  quorum?: number
}

/** One Sentinel on a free loopback port, monitoring `mymaster` at masterPort (quorum 1 by default). */
export async function startSentinel (masterPort: number, downAfterMs = 1000, opts: SentinelOptions = {}): Promise<SentinelProcess> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'aog-sentinel-'))
  writeFileSync(join(dir, 'sentinel.conf'), [
    `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
    `sentinel monitor mymaster 127.0.0.1 ${masterPort} ${opts.quorum ?? 1}`,
    `sentinel down-after-milliseconds mymaster ${downAfterMs}`,
    `sentinel failover-timeout mymaster ${opts.failoverTimeoutMs ?? 5000}`,
  ].join('\n') + '\n')
  const child = spawn('redis-server', [join(dir, 'sentinel.conf'), '--sentinel'], { stdio: 'ignore' })
  process.once('exit', () => { try { child.kill('SIGKILL') } catch {} ; rmSync(dir, { recursive: true, force: true }) })
  return {
    port,
    child,
    async cli (...a) {
      try {
        return (await exec('redis-cli', ['-p', String(port), ...a])).stdout.trim()
      } catch {
        return ''
      }
    },
    stop () { child.kill('SIGKILL') },
  }
}
