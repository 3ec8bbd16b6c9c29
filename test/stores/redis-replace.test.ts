/**
 * Two ways an ioredis client stops serving for good, reproduced against real Redis processes with
 * a bare ioredis client first (it never recovers), then with the RedisStore (it replaces the client
 * and serves again):
 *  - the Sentinel race behind "Connection is closed." after a failover: the failover detector closes
 *    the connector ("+switch-master") while it is asking a Sentinel for the master; the connect then
 *    fails and ioredis ends the client (status "end") instead of retrying;
 *  - a frozen connection (the peer vanished without a reset): every command times out and ioredis
 *    never reconnects, since the socket looks open.
 */
import t, { type Test } from 'tap'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { Redis, type Cluster, type RedisOptions } from 'ioredis'
import { RedisStore } from '../../lib/stores/redis.js'
import { startRedis, startSentinel, type RedisProcess, type SentinelProcess } from '../helpers/redis.js'
import { sleep } from '../helpers/outcome.js'

/** The client options the store uses (lib/stores/redis.ts), for the bare-client reproductions. */
const COMMON: RedisOptions = { enableOfflineQueue: false, commandTimeout: 300, maxRetriesPerRequest: 0, connectTimeout: 1000, retryStrategy: (n: number) => Math.min(50 * n, 1000) }

async function waitFor (what: string, check: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!await check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

async function sentinelSetup (t: Test): Promise<{ master: RedisProcess, sentinel: SentinelProcess }> {
  const master = await startRedis()
  const sentinel = await startSentinel(master.port, 5000)
  t.teardown(async () => { sentinel.child.kill('SIGCONT'); sentinel.stop(); await master.stop() })
  await waitFor('the Sentinel', async () => (await sentinel.cli('sentinel', 'get-master-addr-by-name', 'mymaster')).includes(String(master.port)))
  return { master, sentinel }
}

/**
 * Drive a Sentinel client into the race: the master drops its connection while the Sentinel is
 * stopped (the reconnect hangs in the master lookup), the connector is closed as the failover
 * detector closes it on "+switch-master", then the Sentinel answers.
 */
async function raceSentinelClient (client: Redis, master: RedisProcess, sentinel: SentinelProcess): Promise<void> {
  sentinel.child.kill('SIGSTOP')
  await master.cli('client', 'kill', 'type', 'normal')
  await waitFor('the reconnect', () => client.status === 'connecting')
  await sleep(100)
  ;(client as unknown as { connector: { disconnect: () => void } }).connector.disconnect()
  sentinel.child.kill('SIGCONT')
}

t.test('Sentinel: a client ended by the failover race', async (t) => {
  const { master, sentinel } = await sentinelSetup(t)
  const sentinels = [{ host: '127.0.0.1', port: sentinel.port }]

  const bare = new Redis({ ...COMMON, sentinels, name: 'mymaster', failoverDetector: true, sentinelRetryStrategy: (n: number) => Math.min(50 * n, 1000) })
  bare.on('error', () => {})
  t.teardown(() => bare.disconnect())
  await waitFor('the bare client', () => bare.status === 'ready')
  await raceSentinelClient(bare, master, sentinel)
  await sleep(2000)
  t.equal(bare.status, 'end', 'a bare ioredis client ends and stays ended')
  await t.rejects(bare.ping(), /Connection is closed/, 'every command: "Connection is closed."')

  const clients: Array<Redis | Cluster> = []
  const reasons: string[] = []
  const store = new RedisStore({ sentinels, sentinelName: 'mymaster', prefix: `aogtest:${randomBytes(4).toString('hex')}:`, replaceAfterMs: 5000, onReplace: (r) => reasons.push(r), onClient: (c) => clients.push(c) })
  t.teardown(async () => { await store.close() })
  await store.ready()
  await raceSentinelClient(clients[0] as Redis, master, sentinel)
  await waitFor('the first client to end', () => clients[0]!.status === 'end', 5000)
  const ended = Date.now()
  // The ended client answers, or (when the store's 250 ms check replaced it first) its replacement,
  // still connecting: either way a refusal, never a command sent.
  await t.rejects(store.ping(), { op: 'ping', message: /redis ping failed: (Connection is closed|Stream isn't writeable)/ }, 'the store fails closed while its client is ended')
  await waitFor('the store to serve again', async () => await store.ping().then(() => true, () => false), 5000)
  t.ok(Date.now() - ended < 2500, `serving ${Date.now() - ended} ms after its client ended (well before replaceAfterMs)`)
  t.same(reasons, ['client ended'])
  t.equal(clients.length, 2, 'one new client')
  t.match(store.health(), { state: 'ready', downSince: undefined })
})

/** A TCP proxy whose open connections can be frozen (data swallowed both ways); new ones pass. */
async function freezingProxy (t: Test, port: number): Promise<{ url: string, freeze: () => void }> {
  const pairs: Array<[Socket, Socket]> = []
  const server: Server = createServer((down) => {
    const up = createConnection(port, '127.0.0.1')
    down.pipe(up).pipe(down)
    down.on('error', () => up.destroy())
    up.on('error', () => down.destroy())
    pairs.push([down, up])
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const [a, b] of pairs) { a.destroy(); b.destroy() } server.close() })
  return {
    url: `redis://127.0.0.1:${(server.address() as { port: number }).port}`,
    freeze () {
      for (const [down, up] of pairs.splice(0)) {
        down.unpipe(up)
        up.unpipe(down)
        down.removeAllListeners('data')
        up.removeAllListeners('data')
        down.on('data', () => {})
        up.on('data', () => {})
      }
    },
  }
}

t.test('a frozen connection: the bare client times out forever, the store replaces it', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const proxy = await freezingProxy(t, redis.port)

  const bare = new Redis(proxy.url, COMMON)
  bare.on('error', () => {})
  t.teardown(() => bare.disconnect())
  await waitFor('the bare client', () => bare.status === 'ready')
  proxy.freeze()
  const failures = new Set<string>()
  for (let i = 0; i < 8; i++) await bare.ping().then(() => failures.add('PONG'), (err: Error) => failures.add(err.message))
  t.same([...failures], ['Command timed out'], 'every command times out (2.4 s)')
  t.equal(bare.status, 'ready', 'and the client still thinks it is connected')

  const reasons: string[] = []
  const store = new RedisStore({ url: proxy.url, commandTimeoutMs: 300, replaceAfterMs: 1000, prefix: `aogtest:${randomBytes(4).toString('hex')}:`, onReplace: (r) => reasons.push(r) })
  t.teardown(async () => { await store.close() })
  await store.ready()
  await store.ping()
  proxy.freeze()
  const frozen = Date.now()
  await t.rejects(store.ping(), { op: 'ping', message: /redis ping failed: Command timed out/ })
  t.equal(store.health().state, 'down', 'a ready connection on which commands fail is down')
  // No traffic from here: the store probes by itself while it fails.
  await waitFor('the store to serve again', async () => await store.ping().then(() => true, () => false), 5000)
  const took = Date.now() - frozen
  t.ok(took >= 1000 && took < 3000, `serving again ${took} ms after the freeze (replaceAfterMs 1000)`)
  t.equal(reasons.length, 1, 'replaced once')
  t.match(reasons[0], /^unusable for \d+ ms$/)
  t.match(store.health(), { state: 'ready', downSince: undefined, replacements: 0 })
})

t.test('an injected client is never replaced', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const client = new Redis(redis.url, { ...COMMON, retryStrategy: () => null })
  client.on('error', () => {})
  const store = new RedisStore({ client, replaceAfterMs: 100 })
  t.teardown(async () => { await store.close(); client.disconnect() })
  await store.ready()
  await redis.stop()
  await waitFor('the client to end', () => client.status === 'end')
  await sleep(400)
  t.match(store.health(), { state: 'down', replacements: undefined })
  await t.rejects(store.ping(), { op: 'ping', message: /Connection is closed/ })
})
