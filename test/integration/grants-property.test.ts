/**
 * Random sequences of pass / protected request / time advance / revoke against a plain model of
 * grants (docs/protocol.md section 7): the gate and the model agree on every decision. On the
 * memory store with a fake clock; on Redis, whose clock is its own TIME, without time advances
 * (expiry on Redis is covered by the store conformance suite).
 */
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV } from '../helpers/pki.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { startRedis } from '../helpers/redis.js'
import { pass } from '../../lib/client/agent.js'
import { MemoryStore } from '../../lib/stores/memory.js'

const IDS = ['agent', 'agent2'] as const
type Id = typeof IDS[number]
const TTL_S = 10
const BUDGET = 3

interface Model { now: number, grants: Map<Id, { exp: number, left: number }>, revoked: Set<Id> }
interface Real { g: TestGate, advance: (ms: number) => void, revoke: (ids: Set<Id>) => void, fp: Map<Id, string> }

class Pass implements fc.AsyncCommand<Model, Real> {
  constructor (readonly id: Id) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const got = await pass(r.g.agent(this.id)).then(() => 'ok', (e: { code?: string }) => e.code)
    if (m.revoked.has(this.id)) { if (got !== 'AOG_NOT_AUTHORIZED') throw new Error(`revoked pass: ${String(got)}`); return }
    if (got !== 'ok') throw new Error(`pass refused: ${String(got)}`)
    const cur = m.grants.get(this.id)
    m.grants.set(this.id, { exp: Math.max(cur !== undefined && cur.exp > m.now ? cur.exp : 0, m.now + TTL_S * 1000), left: BUDGET })
  }

  toString (): string { return `pass(${this.id})` }
}

class Request implements fc.AsyncCommand<Model, Real> {
  constructor (readonly id: Id) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const res = await r.g.raw(this.id, '/p')
    const g = m.grants.get(this.id)
    let want = 200
    if (m.revoked.has(this.id)) want = 403
    else if (g === undefined || g.exp <= m.now || g.left === 0) want = 401
    else g.left--
    if (res.status !== want) throw new Error(`request(${this.id}): gate ${res.status}, model ${want}`)
  }

  toString (): string { return `request(${this.id})` }
}

class Advance implements fc.AsyncCommand<Model, Real> {
  constructor (readonly ms: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> { m.now += this.ms; r.advance(this.ms) }
  toString (): string { return `advance(${this.ms})` }
}

class Revoke implements fc.AsyncCommand<Model, Real> {
  constructor (readonly id: Id) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> { m.revoked.add(this.id); r.revoke(m.revoked) }
  toString (): string { return `revoke(${this.id})` }
}

const id = fc.constantFrom(...IDS)
const base = [
  id.map((i) => new Pass(i)),
  id.map((i) => new Request(i)),
  id.map((i) => new Request(i)),
  id.map((i) => new Revoke(i)),
]
// Advances land on, just before and just after the grant's lifetime.
const advance = fc.oneof(fc.integer({ min: 1, max: 4000 }), fc.constantFrom(TTL_S * 1000 - 1, TTL_S * 1000, 1)).map((ms) => new Advance(ms))

async function run (t: Test, store: 'memory' | 'redis', redisUrl: string | undefined, withTime: boolean, runs: number): Promise<void> {
  const up = await startEchoUpstream(t)
  await fc.assert(fc.asyncProperty(fc.commands(withTime ? [...base, advance] : base, { maxCommands: 25 }), async (cmds) => {
    const dir = mkdtempSync(join(tmpdir(), 'aog-prop-'))
    const deny = join(dir, 'deny')
    writeFileSync(deny, '')
    let now = Date.now()
    const clock = (): number => now
    const deps = store === 'memory' ? { store: new MemoryStore({ maxChallenges: 1000, now: clock }), now: clock, watchMs: 0 } : { watchMs: 0 }
    const g = await startGate(t, {
      upstream: up.url,
      assertionKey: join(DEV, 'assertion-key.pem'),
      grantTtlSeconds: TTL_S,
      grantMaxRequests: BUDGET,
      denyFile: deny,
      workers: 1,
      ...(store === 'redis' ? { store: 'redis', redisUrl, redisPrefix: `prop${Math.random().toString(36).slice(2, 8)}:` } : {}),
    }, deps)
    const fp = new Map<Id, string>(IDS.map((i) => [i, g.agent(i).fingerprint]))
    const real: Real = {
      g,
      fp,
      advance: (ms) => { now += ms },
      revoke: (ids) => { writeFileSync(deny, [...ids].map((i) => fp.get(i)).join('\n') + '\n'); g.gate.reload() },
    }
    try {
      await fc.asyncModelRun(() => ({ model: { now, grants: new Map(), revoked: new Set<Id>() }, real }), cmds)
    } finally {
      await g.gate.close()
    }
  }), { numRuns: runs })
  t.pass(`${store}: ${runs} random sequences agree with the model`)
}

t.test('memory store, fake clock: the gate agrees with the model', async (t) => {
  await run(t, 'memory', undefined, true, 25)
})

t.test('Redis: the gate agrees with the model (no time advances)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await run(t, 'redis', redis.url, false, 12)
})
