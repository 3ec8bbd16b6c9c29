/**
 * Issue 21, defect 7, the agent side: a kept-alive connection closed by the server between two
 * requests (an idle timeout shorter than the solve time) costs the agent nothing: a request whose
 * connection closed before any answer is sent once more, on a new connection. GET always; POST /task
 * too, since the gate claims a nonce at most once; a protected POST never.
 *
 * The close is made deterministic by a TCP proxy between the agent and a real gate (the TLS passes
 * through it untouched): it lets a connection idle for a while and closes it (FIN or RST) when the
 * next request arrives, before forwarding it; or it forwards the request and cuts the answer.
 */
import t, { type Test } from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { request } from 'undici'
import type { Counter } from 'prom-client'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles } from '../helpers/pki.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { sleep } from '../helpers/outcome.js'
import { createAgent, getChallenge, pass, solve, submitTask, GateError, type AogAgent } from '../../lib/client/agent.js'

/** fin/rst: close the client's connection instead of forwarding; answer: forward, then cut the answer. */
type Cut = 'fin' | 'rst' | 'answer'

interface CutProxy {
  url: string
  /** Connections accepted, and requests cut. */
  connections: number
  cuts: number
  /** What to do with data arriving on a connection idle for longer than idleMs (undefined: pass it). */
  cut: Cut | undefined
  idleMs: number
}

async function cutProxy (t: Test, gateUrl: string): Promise<CutProxy> {
  const port = Number(new URL(gateUrl).port)
  const p: CutProxy = { url: '', connections: 0, cuts: 0, cut: undefined, idleMs: 300 }
  const sockets = new Set<Socket>()
  const server = createServer((c) => {
    p.connections++
    const u = connect(port, '127.0.0.1')
    for (const s of [c, u]) { sockets.add(s); s.on('error', () => {}); s.on('close', () => { c.destroy(); u.destroy() }) }
    let last = 0 // when the gate last sent bytes on this connection (0: not yet)
    let dropAnswer = false
    c.on('data', (chunk: Buffer) => {
      const idle = last !== 0 && performance.now() - last > p.idleMs
      if (idle && p.cut !== undefined) {
        p.cuts++
        if (p.cut === 'rst') { c.resetAndDestroy(); u.destroy(); return }
        if (p.cut === 'fin') { c.destroy(); u.destroy(); return }
        dropAnswer = true
      }
      u.write(chunk)
    })
    u.on('data', (chunk: Buffer) => {
      last = performance.now()
      if (dropAnswer) { c.destroy(); u.destroy(); return }
      c.write(chunk)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  p.url = `https://localhost:${(server.address() as AddressInfo).port}`
  return p
}

async function count (c: Counter<string>, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await c.get()
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0)
}

async function setup (t: Test, over: Record<string, unknown> = {}): Promise<{ g: TestGate, proxy: CutProxy, agent: AogAgent }> {
  const g = await startGate(t, over)
  const proxy = await cutProxy(t, g.url)
  const agent = createAgent({ url: proxy.url, ...agentFiles('agent'), connections: 1 })
  t.teardown(() => agent.close())
  return { g, proxy, agent }
}

/** The error code a plain undici request on the agent's connections fails with, or 'answered'. */
async function plainRequest (agent: AogAgent, path: string): Promise<string> {
  try {
    const res = await request(agent.url + path, { dispatcher: agent.dispatcher })
    await res.body.dump()
    return 'answered'
  } catch (err) {
    return String((err as { code?: unknown }).code)
  }
}

for (const cut of ['fin', 'rst'] as const) {
  t.test(`the connection closed (${cut.toUpperCase()}) while the agent solved: GET /challenge and POST /task are sent again and pass; the gate saw each once`, async (t) => {
    const { g, proxy, agent } = await setup(t)
    proxy.cut = cut
    // The defect, without the agent's resend: a plain request on the idle connection fails.
    t.equal(await plainRequest(agent, '/challenge'), 'answered', 'the first request opens the connection')
    await sleep(proxy.idleMs + 200)
    t.equal(await plainRequest(agent, '/challenge'), cut === 'fin' ? 'UND_ERR_SOCKET' : 'ECONNRESET', 'a plain undici request on the idle connection fails')
    t.equal(proxy.cuts, 1)

    await plainRequest(agent, '/challenge') // a fresh connection, idle again below
    await sleep(proxy.idleMs + 200)
    const c = await getChallenge(agent)
    t.equal(proxy.cuts, 2, 'GET /challenge: its connection was closed under it, and it was sent again')
    const body = solve(c, agent.fingerprint)
    await sleep(proxy.idleMs + 200) // solving takes longer than the connection stays open
    t.equal((await submitTask(agent, body)).status, 'accepted', 'POST /task sent again on a new connection: accepted')
    t.equal(proxy.cuts, 3)
    t.equal(await count(g.metrics.submissions), 1, 'the gate saw the submission once')
    t.equal(await count(g.metrics.submissions, { outcome: 'accepted' }), 1)
  })
}

t.test('a submission the gate did receive (its answer cut): the resend is refused 409 AOG_NONCE_CONSUMED, saying so; never verified twice', async (t) => {
  const { g, proxy, agent } = await setup(t)
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  proxy.cut = 'answer'
  await sleep(proxy.idleMs + 200)
  const err = await submitTask(agent, body).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof GateError, 'a GateError, from the resend')
  t.match(err, { status: 409, code: 'AOG_NONCE_CONSUMED', message: /resent after the connection closed.*the first submission reached the gate/ })
  t.equal(await count(g.metrics.submissions, { outcome: 'accepted' }), 1, 'the first submission was verified and accepted')
  t.equal(await count(g.metrics.submissions, { outcome: 'rejected', reason: 'AOG_NONCE_CONSUMED' }), 1, 'the resend was refused, not verified')
})

t.test('sent again once at most: a connection that closes under every request fails after two connections', async (t) => {
  const { proxy, agent } = await setup(t)
  t.equal(await plainRequest(agent, '/challenge'), 'answered')
  proxy.idleMs = -1 // from now on every connection closes when the client speaks after the gate did (TLS included)
  proxy.cut = 'fin'
  const before = proxy.connections
  const err = await getChallenge(agent).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof Error && !(err instanceof GateError), `a transport error (${String((err as Error).message)})`)
  t.equal(proxy.connections - before, 1, 'one new connection for the single resend (the first went on the kept-alive one)')
})

t.test('agent.fetch: a protected GET is sent again, a protected POST is not (the application may have acted on it)', async (t) => {
  const up = await startEchoUpstream(t)
  const { proxy, agent } = await setup(t, { upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  t.equal((await agent.fetch('/first')).statusCode, 200)
  const seen = up.seen.length
  proxy.cut = 'fin'
  await sleep(proxy.idleMs + 200)
  const r = await agent.fetch('/again')
  t.equal(r.statusCode, 200, 'the GET whose connection closed was sent again')
  await r.body.dump()
  t.equal(proxy.cuts, 1)
  t.equal(up.seen.length, seen + 1, 'the application saw it once')

  await sleep(proxy.idleMs + 200)
  const err = await agent.fetch('/notes', { method: 'POST', body: 'x' }).then(() => undefined, (e: unknown) => e)
  t.equal((err as { code?: unknown }).code, 'UND_ERR_SOCKET', 'the POST fails with the transport error')
  t.equal(proxy.cuts, 2)
  t.equal(up.seen.length, seen + 1, 'and was not sent again')
})

t.test('a gate whose keep-alive timeout is shorter than the solve time: every pass succeeds', async (t) => {
  const g = await startGate(t, { keepAliveTimeoutMs: 1000 })
  const agent = createAgent({ url: g.url, ...agentFiles('agent'), connections: 1 })
  t.teardown(() => agent.close())
  for (const solveMs of [900, 1100, 1500]) {
    const c = await getChallenge(agent)
    const body = solve(c, agent.fingerprint)
    await sleep(solveMs)
    t.equal((await submitTask(agent, body)).status, 'accepted', `solved in ${solveMs} ms on a 1000 ms keep-alive`)
  }
  t.equal((await pass(agent)).status, 'accepted')
})
