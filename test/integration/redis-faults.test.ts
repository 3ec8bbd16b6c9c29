/** The gate on a real Redis it cannot trust to stay up: script flushes, stalls, kills; round trips; TTLs. */
import t from 'tap'
import { request } from 'undici'
import { Redis } from 'ioredis'
import { startGate } from '../helpers/gate.js'
import { startRedis } from '../helpers/redis.js'
import { getChallenge, pass, solve, submitTask } from '../../lib/client/agent.js'
import { outcome, sleep } from '../helpers/outcome.js'

t.test('SCRIPT FLUSH mid-run: no failed request', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url })
  const agent = g.agent()
  const results: string[] = []
  for (let i = 0; i < 12; i++) {
    if (i % 4 === 2) t.equal(await redis.cli('script', 'flush'), 'OK')
    results.push(await outcome(pass(agent)))
  }
  t.same(results, Array(12).fill('accepted'))
  t.match(await redis.cli('info', 'commandstats'), /cmdstat_eval:calls=[1-9]/, 'the flushed scripts were reloaded through EVAL')
})

t.test('one round trip per store operation: counted by INFO commandstats and MONITOR', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url, workers: 1 })
  const agent = g.agent()
  await getChallenge(agent) // the connection's first call of the script (ioredis sends EVAL once per connection)
  const base = new Redis(redis.url)
  const monitor = await base.monitor()
  t.teardown(() => { monitor.disconnect(); base.disconnect() })
  const topLevel: string[] = []
  monitor.on('monitor', (_time: string, args: string[], source: string) => { if (source !== 'lua') topLevel.push(String(args[0]).toLowerCase()) })
  await sleep(50)
  t.equal(await redis.cli('config', 'resetstat'), 'OK')
  const c = await getChallenge(agent) // issue: 1
  const body = solve(c, agent.fingerprint)
  await submitTask(agent, body) // consume + bind: 2
  await t.rejects(submitTask(agent, body)) // consume (409): 1
  await t.rejects(submitTask(agent, { ...body, client_fingerprint: 'f'.repeat(64) })) // take (403): 1
  await sleep(100)
  const stats = await redis.cli('info', 'commandstats')
  const calls = Object.fromEntries([...stats.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1], Number(m[2])]))
  const scripts = (calls.evalsha ?? 0) + (calls.eval ?? 0)
  t.equal(scripts, 5, `script calls: GET /challenge 1, accepted POST 2 (claim + bind), refused POSTs 1 each (${JSON.stringify(calls)})`)
  const fromGate = topLevel.filter((cmd) => !['config', 'info'].includes(cmd))
  // ioredis sends a script as EVAL on its first use on a connection, EVALSHA after: one round trip either way.
  t.ok(fromGate.every((cmd) => cmd === 'evalsha' || cmd === 'eval'), `MONITOR sees only script calls from the gate: ${fromGate.join(' ')}`)
  t.equal(fromGate.length, 5, 'five round trips')
})

t.test('after a run every key has a TTL', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url, rateBurst: 3, ratePerSecond: 0.01 })
  const agent = g.agent()
  await pass(agent)
  await outcome(pass(agent)) // second pass: the bucket runs dry
  await outcome(getChallenge(g.agent('agent2')))
  const r = new Redis(redis.url)
  r.on('error', () => {})
  t.teardown(() => r.disconnect())
  let cursor = '0'
  const keys: string[] = []
  do {
    const [next, batch] = await r.scan(cursor, 'COUNT', 100)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  t.ok(keys.length >= 5, `${keys.length} keys`)
  for (const k of keys) t.ok(await r.pttl(k) > 0, `${k} has a TTL`)
})

t.test('Redis stalled (SIGSTOP) or killed mid-load: only 503s with Retry-After, zero accepts, then recovery', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url, redisCommandTimeoutMs: 200 })
  const agent = g.agent()
  const ready = async (): Promise<number> => { const r = await request(g.opsUrl + '/readyz'); await r.body.dump(); return r.statusCode }

  for (const fault of ['SIGSTOP', 'SIGKILL'] as const) {
    t.equal(await outcome(pass(agent)), 'accepted', `before ${fault}`)
    const pending = await Promise.all([0, 1, 2].map(async () => { const c = await getChallenge(agent); return solve(c, agent.fingerprint) }))
    redis.child.kill(fault)
    const load = await Promise.all([
      ...Array.from({ length: 10 }, async () => await outcome(getChallenge(agent))),
      ...pending.map(async (b) => await outcome(submitTask(agent, b))),
    ])
    t.same([...new Set(load)], ['503 AOG_UNAVAILABLE retry'], `${fault}: ${load.length} requests, all 503 with Retry-After`)
    t.equal(await ready(), 503, `${fault}: /readyz is 503`)
    if (fault === 'SIGSTOP') redis.child.kill('SIGCONT')
    else await redis.restart()
    const end = Date.now() + 15_000
    while (await ready() !== 200 && Date.now() < end) await sleep(100)
    t.equal(await ready(), 200, `${fault}: ready again without a restart of the gate`)
    t.equal(await outcome(pass(agent)), 'accepted', `${fault}: serving again`)
  }
})
