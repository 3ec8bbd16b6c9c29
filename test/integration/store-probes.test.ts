/**
 * /readyz and /healthz against an unusable store: readiness drops at once, liveness only once the
 * store has been unusable for --liveness-store-down-seconds (and its client was replaced), and both
 * come back with the store. aog_store_connection_state and the `op` label of aog_store_errors_total.
 */
import t from 'tap'
import { request } from 'undici'
import { startGate } from '../helpers/gate.js'
import { failingStore } from '../helpers/failing-store.js'
import { startRedis } from '../helpers/redis.js'
import { outcome, sleep } from '../helpers/outcome.js'
import { getChallenge, solve, submitTask } from '../../lib/client/agent.js'

async function probe (url: string): Promise<{ status: number, ms: number, body: any }> {
  const t0 = Date.now()
  const res = await request(url)
  return { status: res.statusCode, ms: Date.now() - t0, body: await res.body.json() }
}

async function scrape (opsUrl: string): Promise<string> {
  return await (await request(`${opsUrl}/metrics`)).body.text()
}

function stateOf (text: string): string[] {
  return [...text.matchAll(/^aog_store_connection_state\{state="(\w+)"\} 1$/gm)].map((m) => m[1]!)
}

t.test('a store that answers no ping: /readyz 503 at once, /healthz 503 only after livenessStoreDownSeconds', async (t) => {
  const f = failingStore()
  const g = await startGate(t, { livenessStoreDownSeconds: 1 }, { store: f.store })
  t.equal((await probe(`${g.opsUrl}/readyz`)).status, 200)
  t.same(stateOf(await scrape(g.opsUrl)), ['ready'])
  f.down()
  const r = await probe(`${g.opsUrl}/readyz`)
  t.equal(r.status, 503, 'not ready while the store is down')
  t.match(r.body, { problems: ['store unreachable'] })
  t.ok(r.ms < 1000, `answered in ${r.ms} ms`)
  const early = await probe(`${g.opsUrl}/healthz`)
  t.equal(early.status, 200, 'alive: a store outage shorter than the limit is not a reason to restart')
  t.same(stateOf(await scrape(g.opsUrl)), ['down'])
  await sleep(1100)
  const late = await probe(`${g.opsUrl}/healthz`)
  t.equal(late.status, 503, 'down for longer than livenessStoreDownSeconds: restart me')
  t.match(late.body, { status: 'unhealthy', problems: [/^store unusable for 1 s$/] })
  f.up()
  t.equal((await probe(`${g.opsUrl}/healthz`)).status, 200, 'alive again with the store')
  t.equal((await probe(`${g.opsUrl}/readyz`)).status, 200, 'ready again')
  t.same(stateOf(await scrape(g.opsUrl)), ['ready'])
})

t.test('a store that replaces its client: /healthz stays 200 until a replacement was tried', async (t) => {
  const f = failingStore(1000, { health: true })
  const g = await startGate(t, { livenessStoreDownSeconds: 1 }, { store: f.store })
  f.down()
  t.equal((await probe(`${g.opsUrl}/readyz`)).status, 503)
  await sleep(1100)
  t.equal((await probe(`${g.opsUrl}/healthz`)).status, 200, 'no replacement yet: it may still heal')
  f.replaced()
  const h = await probe(`${g.opsUrl}/healthz`)
  t.equal(h.status, 503, 'replaced and still down: restart me')
  t.match(h.body, { problems: [/^store unusable for \d+ s after 1 client replacement$/] })
  f.up()
  t.equal((await probe(`${g.opsUrl}/healthz`)).status, 200)
})

t.test('aog_store_errors_total is labelled by the store operation that failed', async (t) => {
  const f = failingStore()
  const g = await startGate(t, {}, { store: f.store })
  const agent = g.agent()
  const c = await getChallenge(agent)
  f.fail()
  t.equal((await g.raw('agent', '/challenge')).status, 503, 'issue failed')
  f.down()
  t.equal(await outcome(submitTask(agent, solve(c, agent.fingerprint))), '503 AOG_UNAVAILABLE retry', 'consume failed')
  f.up()
  const text = await scrape(g.opsUrl)
  const ops = [...text.matchAll(/^aog_store_errors_total\{op="([^"]+)"\} (\d+)$/gm)].map((m) => `${m[1]!}=${m[2]!}`).sort()
  t.same(ops, ['consume=1', 'issue=1'])
})

t.test('a Redis store: /readyz follows the connection within a second, /healthz once down and replaced', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const g = await startGate(t, { store: 'redis', redisUrl: redis.url, redisReplaceAfterMs: 300, livenessStoreDownSeconds: 2 })
  await (g.gate.store as unknown as { ready: () => Promise<void> }).ready()
  t.equal((await probe(`${g.opsUrl}/readyz`)).status, 200)
  t.same(stateOf(await scrape(g.opsUrl)), ['ready'])
  const killed = Date.now()
  await redis.stop()
  let r = await probe(`${g.opsUrl}/readyz`)
  while (r.status === 200 && Date.now() - killed < 5000) { await sleep(50); r = await probe(`${g.opsUrl}/readyz`) }
  t.equal(r.status, 503, 'not ready')
  t.ok(Date.now() - killed < 1500, `not ready ${Date.now() - killed} ms after Redis died`)
  t.ok(r.ms < 1000, `the probe answered in ${r.ms} ms`)
  t.match(stateOf(await scrape(g.opsUrl)), [/^(reconnecting|connecting|down)$/])
  t.equal((await probe(`${g.opsUrl}/healthz`)).status, 200, 'alive for now')
  await sleep(2200)
  const h = await probe(`${g.opsUrl}/healthz`)
  t.equal(h.status, 503, 'Redis gone for longer than livenessStoreDownSeconds after replacements')
  t.match(h.body, { problems: [/client replacement/] })
  const text = await scrape(g.opsUrl)
  const replaced = Number(/^aog_store_client_replacements_total (\d+)$/m.exec(text)?.[1])
  t.ok(replaced >= 1, `replaced ${replaced} times`)
  t.ok(g.logs.some((l) => l.includes('redis client replaced')), 'the replacement is logged')
  await redis.restart()
  const end = Date.now() + 5000
  while ((await probe(`${g.opsUrl}/readyz`)).status !== 200 && Date.now() < end) await sleep(100)
  t.equal((await probe(`${g.opsUrl}/readyz`)).status, 200, 'ready again with Redis')
  t.equal((await probe(`${g.opsUrl}/healthz`)).status, 200, 'alive again')
  t.equal((await g.raw('agent', '/challenge')).status, 200, 'serving')
})
