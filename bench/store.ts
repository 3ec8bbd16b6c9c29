/**
 * bench:store — issue and consume on the memory store vs Redis (single node) and a 3-master Redis
 * Cluster: operations per second and p50/p99 latency with C operations in flight, each next to the
 * memory store measured in the same run, plus a bare Redis PING as the round-trip floor; and Redis
 * memory per live challenge (MEMORY USAGE of one record, and used_memory growth over many).
 * Then the memory store at its steady state: CPU per issue (with the gate's own nonce and seed
 * draws) while it holds `--steady-live` records, next to the same issues into an empty store.
 *   npm run bench:store [-- --ops 20000 --concurrency 32 --redis redis://127.0.0.1:6379 --no-cluster --steady-live 3500000]
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { MemoryStore } from '../lib/stores/memory.js'
import { RandomPool } from '../lib/random.js'
import { RedisStore } from '../lib/stores/redis.js'
import { IssueStatus, type Store } from '../lib/stores/store.js'
import { startCluster } from '../test/helpers/redis.js'
import { benchArgs } from './args.js'
import { machine, table } from './util.js'

const values = benchArgs('bench:store', 'Issue and consume on the memory store, Redis and a 3-master Redis Cluster (started on loopback ports), each next to the memory store; then the memory store at its steady state.', {
  ops: { type: 'number', default: 20000, help: 'operations per measurement' },
  concurrency: { type: 'number', default: 32, help: 'operations in flight' },
  redis: { type: 'string', default: 'redis://127.0.0.1:6379', help: 'the single Redis node', check: (v) => /^rediss?:\/\//.test(v) ? undefined : 'expected a redis:// or rediss:// URL' },
  'no-cluster': { type: 'boolean', default: false, help: 'skip the Redis Cluster rows' },
  'steady-live': { type: 'number', default: 3_500_000, min: 0, help: 'records the memory store holds for its steady-state row (0 skips the row)' },
})
const OPS = values.ops
const C = values.concurrency
const rate = { burst: 1e9, perSecond: 1e9 }

interface Result { opsPerSec: number, p50: number, p99: number }

async function measure (op: (i: number) => Promise<unknown>): Promise<Result> {
  const lat = new Float64Array(OPS)
  let next = 0
  const t0 = process.hrtime.bigint()
  await Promise.all(Array.from({ length: C }, async () => {
    while (next < OPS) {
      const i = next++
      const s = process.hrtime.bigint()
      await op(i)
      lat[i] = Number(process.hrtime.bigint() - s) / 1e6
    }
  }))
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  lat.sort()
  return { opsPerSec: OPS / secs, p50: lat[Math.floor(OPS * 0.5)]!, p99: lat[Math.floor(OPS * 0.99)]! }
}

async function bench (name: string, store: Store): Promise<Record<string, Result>> {
  // Many identities (realistic, and spread over the Cluster's slots).
  const fps = Array.from({ length: 256 }, () => randomBytes(32).toString('hex'))
  const nonces = Array.from({ length: OPS }, () => randomBytes(16).toString('base64url'))
  const seed = randomBytes(32).toString('hex')
  for (let i = 0; i < 200; i++) await store.take({ fingerprint: fps[i % 256]!, rate }) // warm-up
  const issue = await measure(async (i) => await store.issue({ fingerprint: fps[i % 256]!, rate, nonce: nonces[i]!, seed, iterations: 1 << 20, checkpointInterval: 1 << 14, deadlineMs: 60_000, graceMs: 60_000 }))
  const consume = await measure(async (i) => await store.consume({ fingerprint: fps[i % 256]!, nonce: nonces[i]!, rate }))
  console.error(`  ${name}: done`)
  return { issue, consume }
}

const prefix = `aogbench:${randomBytes(3).toString('hex')}:`
const results: Record<string, Record<string, Result>> = {}
const memory = new MemoryStore({ maxChallenges: OPS * 2, sweepIntervalMs: 0 })
results.memory = await bench('memory', memory)
await memory.close()

const redis = new RedisStore({ url: values.redis, prefix })
await redis.ready()
results.redis = await bench('redis', redis)

const raw = new Redis(values.redis)
const ping = await measure(async () => await raw.ping())

let cluster: Awaited<ReturnType<typeof startCluster>> | undefined
if (!values['no-cluster']) {
  cluster = await startCluster(3)
  const cs = new RedisStore({ cluster: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), prefix })
  await cs.ready()
  results['redis cluster (3)'] = await bench('redis cluster', cs)
  await cs.close()
  await cluster.stop()
}

// Memory per live challenge, with the default key prefix ('aog:') under one fresh identity.
const seed = randomBytes(32).toString('hex')
const plain = new RedisStore({ url: values.redis })
await plain.ready()
const fp = randomBytes(32).toString('hex')
const tag = `aog:{${Buffer.from(fp, 'hex').toString('base64url')}}`
const one = randomBytes(16).toString('base64url')
const issue1 = async (nonce: string): Promise<unknown> => await plain.issue({ fingerprint: fp, rate, nonce, seed, iterations: 1 << 20, checkpointInterval: 1 << 14, deadlineMs: 10_000, graceMs: 60_000 })
await issue1(one)
const usage = Number(await raw.call('MEMORY', 'USAGE', `${tag}:c:${one}`))
const N = 20_000
const used = async (): Promise<number> => Number(/used_memory:(\d+)/.exec(await raw.info('memory'))![1])
const before = await used()
for (let i = 0; i < N; i += 500) await Promise.all(Array.from({ length: 500 }, async () => await issue1(randomBytes(16).toString('base64url'))))
const perRecord = (await used() - before) / N
for (const p of [`${prefix}*`, `${tag}*`]) await raw.eval('for _, k in ipairs(redis.call(\'KEYS\', ARGV[1])) do redis.call(\'DEL\', k) end', 0, p)
await plain.close()
await redis.close()
raw.disconnect()

const base = results.memory!
console.log(`bench:store  ${machine()}  ${OPS} operations per test, ${C} in flight`)
console.log(table(Object.entries(results).flatMap(([store, r]) => (['issue', 'consume'] as const).map((op) => ({
  store,
  op,
  'ops/s': Math.round(r[op]!.opsPerSec).toLocaleString('en'),
  'p50 ms': r[op]!.p50.toFixed(3),
  'p99 ms': r[op]!.p99.toFixed(3),
  'vs memory': `${(r[op]!.opsPerSec / base[op]!.opsPerSec).toFixed(3)}x`,
  'vs PING': store === 'memory' ? '' : `${(r[op]!.opsPerSec / ping.opsPerSec).toFixed(2)}x`,
})))))
console.log(`redis PING round trip (floor): ${Math.round(ping.opsPerSec).toLocaleString('en')} ops/s, p50 ${ping.p50.toFixed(3)} ms`)
console.log(`redis memory per live challenge: MEMORY USAGE ${usage} bytes; used_memory growth ${perRecord.toFixed(0)} bytes/record over ${N} (target <= 200)`)

/**
 * The memory store at its steady state. At the defaults a record lives 70 s (a 10 s deadline and
 * 60 s of grace), so a gate issuing R challenges a second holds 70·R of them (3.5 million at
 * 50k/s). A simulated clock advances 70 s / live per issue, so that `live` records are alive once
 * the first 70 s have passed; the sweep runs every simulated second, as the gate's timer does.
 * CPU per issue (process.cpuUsage, garbage collection included) for a million issues into an
 * empty store (the baseline), then for a million more at the steady state.
 */
const live = values['steady-live']
if (live > 0) {
  let now = 1.8e12
  const random = new RandomPool()
  const store = new MemoryStore({ maxChallenges: 2 * live, now: () => Math.floor(now), sweepIntervalMs: 0 })
  const step = 70_000 / live
  const fingerprint = randomBytes(32).toString('hex')
  let lastSweep = now
  const issues = (n: number): void => {
    for (let i = 0; i < n; i++) {
      now += step
      if (now - lastSweep >= 1000) { store.sweep(); lastSweep = now }
      const r = store.issue({ fingerprint, rate, nonce: random.nonce(), seed: random.hex(32), iterations: 1 << 20, checkpointInterval: 1 << 14, deadlineMs: 10_000, graceMs: 60_000 })
      if (r.status !== IssueStatus.OK) throw new Error(`issue refused: ${r.status}`)
    }
  }
  const cpuNs = (n: number): number => {
    const c0 = process.cpuUsage()
    issues(n)
    const c = process.cpuUsage(c0)
    return (c.user + c.system) * 1000 / n
  }
  const M = 1_000_000
  const empty = cpuNs(M)
  issues(Math.max(0, Math.ceil(live * 1.1) - M)) // past 70 simulated seconds: records now expire as fast as they come
  const full = cpuNs(M)
  console.log(`memory store at its steady state (${store.size.toLocaleString('en')} live records, ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB of heap): ${full.toFixed(0)} ns of CPU per issue, against ${empty.toFixed(0)} ns into an empty store (${(full / empty).toFixed(2)}x)`)
  await store.close()
}
process.exit(0)
