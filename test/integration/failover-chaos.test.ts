/**
 * Chaos: a Redis master killed with SIGKILL again and again (AOG_CHAOS_FAILOVERS, default 20) under
 * a Sentinel, two gates passing agents all the while. Each killed node comes back as a replica of
 * the new master before the next kill. For every failover and every gate: the time from the
 * promotion (the Sentinel names the new master) to the gate's first pass that started after it.
 * Asserted: every gate serves again within 10 s of every promotion, nothing invalid is ever
 * accepted (a replayed or tampered solution), no answer other than a pass, 503 (fail closed) or
 * 404 (a challenge the dead master had not replicated yet).
 *
 * A control: a store with an injected bare ioredis client (never replaced, what the gate did before)
 * runs beside them; how often it ended for good ("Connection is closed.") is reported, not asserted.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { startGate, type TestGate } from '../helpers/gate.js'
import { startRedis, startSentinel, type RedisProcess } from '../helpers/redis.js'
import { outcome, sleep } from '../helpers/outcome.js'
import { getChallenge, solve, submitTask } from '../../lib/client/agent.js'
import { RedisStore } from '../../lib/stores/redis.js'

const FAILOVERS = Number(process.env.AOG_CHAOS_FAILOVERS ?? 20)
const BUDGET_MS = 225_000
const RECOVERY_LIMIT_MS = 10_000
const ALLOWED = new Set(['accepted', '503 AOG_UNAVAILABLE retry', '404 AOG_UNKNOWN_NONCE'])

interface Attempt { gate: number, start: number, end: number, result: string }

async function until (what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!await check().catch(() => false)) {
    if (Date.now() > end) throw new Error(`timed out (${ms} ms) waiting for ${what}`)
    await sleep(25)
  }
}

t.test(`${FAILOVERS} Sentinel failovers (master SIGKILLed) under load: every gate serves within 10 s of every promotion`, async (t) => {
  const nodes: RedisProcess[] = [await startRedis()]
  for (let i = 0; i < 2; i++) nodes.push(await startRedis(['--replicaof', '127.0.0.1', String(nodes[0]!.port)]))
  // Three Sentinels, quorum 2 (as in production): each announces +switch-master in its own time,
  // which is what drives an ioredis client into the race that ends it.
  const count = Number(process.env.AOG_CHAOS_SENTINELS ?? 3)
  const sentinels = await Promise.all(Array.from({ length: count }, async () => await startSentinel(nodes[0]!.port, 1000, { failoverTimeoutMs: 2000, quorum: count >= 3 ? 2 : 1 })))
  const scs = sentinels.map((x) => new Redis({ port: x.port, host: '127.0.0.1', maxRetriesPerRequest: 0, commandTimeout: 1000 }))
  for (const c of scs) c.on('error', () => {})
  const sc = scs[0]!
  t.teardown(async () => { for (const c of scs) c.disconnect(); for (const x of sentinels) x.stop(); await Promise.all(nodes.map(async (n) => await n.stop())) })
  const masterPort = async (c = sc): Promise<number> => Number(((await c.call('sentinel', 'get-master-addr-by-name', 'mymaster')) as string[])[1])
  // Settled: every Sentinel names the same master, sees it and both replicas up (flags from its
  // pings, every second) and its peers; the master has both replicas online (its own INFO).
  const settled = async (): Promise<boolean> => {
    const m = await masterPort()
    for (const c of scs) {
      if (await masterPort(c) !== m) return false
      const master = await c.call('sentinel', 'master', 'mymaster') as string[]
      if (master[master.indexOf('flags') + 1] !== 'master' || master[master.indexOf('num-other-sentinels') + 1] !== String(count - 1)) return false
      const replicas = await c.call('sentinel', 'replicas', 'mymaster') as string[][]
      if (replicas.filter((r) => r[r.indexOf('flags') + 1] === 'slave').length !== 2) return false
    }
    const info = await nodes.find((n) => n.port === m)!.cli('info', 'replication')
    return (info.match(/^slave\d+:.*state=online/gm) ?? []).length === 2
  }
  await until('the Sentinels to see each other and both replicas', settled, 30_000)

  const common = { store: 'redis' as const, redisSentinels: sentinels.map((x) => `127.0.0.1:${x.port}`).join(','), redisSentinelName: 'mymaster', redisPrefix: `aogchaos:${randomBytes(3).toString('hex')}:`, redisWaitReplicas: 1, redisWaitTimeoutMs: 300 }
  const gates: TestGate[] = [await startGate(t, common), await startGate(t, common)]

  // Two agents per gate, passing continuously; now and then a replayed or a tampered solution.
  const attempts: Attempt[] = []
  const invalidAccepted: string[] = []
  const run = { stop: false }
  const loop = async (gi: number, name: 'agent' | 'agent2'): Promise<void> => {
    const agent = gates[gi]!.agent(name)
    let round = 0
    while (!run.stop) {
      round++
      const start = Date.now()
      let result: string
      let body: ReturnType<typeof solve> | undefined
      try {
        body = solve(await getChallenge(agent), agent.fingerprint)
        result = await outcome(submitTask(agent, body))
      } catch (err) {
        result = await outcome(Promise.reject(err))
      }
      attempts.push({ gate: gi, start, end: Date.now(), result })
      if (body !== undefined && result === 'accepted' && round % 3 === 0) {
        if (await outcome(submitTask(agent, body)) === 'accepted') invalidAccepted.push('replay')
        const forged = { ...body, trace_hash: (body.trace_hash ?? '').replace(/^./, (c) => c === '0' ? '1' : '0') }
        if (await outcome(submitTask(agent, forged)) === 'accepted') invalidAccepted.push('tampered')
      }
      await sleep(result === 'accepted' ? 10 : 50)
    }
  }
  const loops = [loop(0, 'agent'), loop(0, 'agent2'), loop(1, 'agent'), loop(1, 'agent2')]

  // The control: what a bare client does through the same failovers (replaced by a fresh one
  // whenever it ended, so that each occurrence is counted).
  let controlEnded = 0
  const control = controlLoop(sentinels.map((x) => x.port), () => run.stop, () => { controlEnded++ })

  const started = Date.now()
  const records: Array<{ promoted: number, recovery: number[], failed: number[] }> = []
  for (let f = 0; f < FAILOVERS && Date.now() - started < BUDGET_MS; f++) {
    const old = await masterPort()
    const victim = nodes.find((n) => n.port === old)!
    const killed = Date.now()
    await victim.stop()
    await until(`failover ${f + 1}: a new master`, async () => (await masterPort()) !== old, 30_000)
    const promoted = Date.now()
    // Back as a replica of the new master at once (it comes back while the gates recover).
    await victim.restart(['--replicaof', '127.0.0.1', String(await masterPort())])
    // Watch until the Sentinel has finished (+switch-master, which drops every client once more),
    // a second more, and until every gate passed an agent after its last failure.
    const window = (gi: number): Attempt[] => attempts.filter((a) => a.gate === gi && a.start >= killed)
    const recoveredAt = (gi: number): number | undefined => {
      const w = window(gi)
      const lastFail = Math.max(promoted, ...w.filter((a) => a.result !== 'accepted').map((a) => a.end))
      return w.find((a) => a.result === 'accepted' && a.start >= lastFail)?.end
    }
    await until(`failover ${f + 1}: the set to settle`, settled, 30_000)
    const settledAt = Date.now()
    await until(`failover ${f + 1}: both gates serving`, async () => Date.now() - settledAt > 1000 && gates.every((_, gi) => recoveredAt(gi) !== undefined), RECOVERY_LIMIT_MS + 5000).catch(() => {})
    const recovery = gates.map((_, gi) => (recoveredAt(gi) ?? Infinity) - promoted)
    const failed = gates.map((_, gi) => window(gi).filter((a) => a.result !== 'accepted').length)
    records.push({ promoted: promoted - killed, recovery, failed })
    t.ok(recovery.every((r) => r < RECOVERY_LIMIT_MS), `failover ${f + 1}: promoted ${promoted - killed} ms after the kill; gates serving for good ${recovery.map((r) => `${r} ms`).join(' / ')} after it; ${failed.join(' / ')} failed requests`)
  }
  run.stop = true
  await Promise.all([...loops, control])

  const worst = Math.max(...records.flatMap((r) => r.recovery))
  const failedInWindows = records.reduce((n, r) => n + r.failed[0]! + r.failed[1]!, 0)
  const byResult = new Map<string, number>()
  for (const a of attempts) byResult.set(a.result, (byResult.get(a.result) ?? 0) + 1)
  const replacements = await Promise.all(gates.map(async (g) => (await g.metrics.storeReplacements.get()).values[0]?.value ?? 0))
  t.ok(records.length >= FAILOVERS, `${records.length} failovers in ${Math.round((Date.now() - started) / 1000)} s (of ${FAILOVERS})`)
  t.ok(worst < RECOVERY_LIMIT_MS, `worst recovery ${worst} ms`)
  t.same(invalidAccepted, [], 'nothing replayed or tampered was ever accepted')
  t.same([...byResult.keys()].filter((r) => !ALLOWED.has(r)), [], 'no answer but a pass, 503 or 404 (no 500, no transport error)')
  t.ok((byResult.get('accepted') ?? 0) > records.length * 4, 'the gates kept passing agents')
  const mean = records.flatMap((r) => r.recovery).reduce((a, b) => a + b, 0) / (records.length * 2)
  t.comment(`failovers: ${records.length}; promotion after the kill: max ${Math.max(...records.map((r) => r.promoted))} ms`)
  t.comment(`recovery after promotion (per gate): worst ${worst} ms, mean ${Math.round(mean)} ms`)
  t.comment(`failed requests during the windows (kill to recovery): ${failedInWindows} of ${attempts.length} attempts in all; results ${JSON.stringify(Object.fromEntries(byResult))}`)
  t.comment(`client replacements per gate: ${replacements.join(' / ')}; control (bare ioredis client) ended for good ${controlEnded} time(s)`)
})

/** A store on an injected bare Sentinel client (never replaced) doing take() until stop(); onEnded when it is stuck. */
async function controlLoop (ports: number[], stopped: () => boolean, onEnded: () => void): Promise<void> {
  const make = (): { client: Redis, store: RedisStore } => {
    const client = new Redis({
      sentinels: ports.map((port) => ({ host: '127.0.0.1', port })),
      name: 'mymaster',
      enableOfflineQueue: false,
      commandTimeout: 1000,
      maxRetriesPerRequest: 0,
      connectTimeout: 1000,
      retryStrategy: (n: number) => Math.min(50 * n, 1000),
      sentinelRetryStrategy: (n: number) => Math.min(50 * n, 1000),
      failoverDetector: true,
      reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
    })
    client.on('error', () => {})
    return { client, store: new RedisStore({ client, prefix: 'aogcontrol:' }) }
  }
  let c = make()
  const fingerprint = randomBytes(32).toString('hex')
  while (!stopped()) {
    await c.store.take({ fingerprint, rate: { burst: 1000, perSecond: 1000 } }).catch(() => {})
    if (c.client.status === 'end') {
      onEnded()
      await c.store.close()
      c.client.disconnect()
      c = make()
    }
    await sleep(50)
  }
  await c.store.close()
  c.client.disconnect()
}
