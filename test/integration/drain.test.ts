/**
 * The drain (issue 21, defect 5): on close() the gate answers /readyz 503 for drainDelayMs while it
 * still serves, every response asking its client to close the connection; only then does the
 * listener close and in-flight requests finish.
 */
import t from 'tap'
import { request } from 'undici'
import { startGate } from '../helpers/gate.js'
import { sleep } from '../helpers/outcome.js'
import { pass } from '../../lib/client/agent.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { DEV } from '../helpers/pki.js'
import { join } from 'node:path'

async function readyz (opsUrl: string): Promise<{ status: number, body: any }> {
  const res = await request(`${opsUrl}/readyz`)
  return { status: res.statusCode, body: await res.body.json() }
}

/** The error code of a request that fails at the transport level, or 'answered'. */
async function transport (p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'answered'
  } catch (err) {
    const e = err as { code?: string, cause?: { code?: string } }
    return e.cause?.code ?? e.code ?? String(err)
  }
}

t.test('drainDelayMs: /readyz 503 at once, the gate still serves (Connection: close) until the delay is over, then refuses connections', async (t) => {
  const DRAIN = 1500
  const g = await startGate(t, { drainDelayMs: DRAIN })
  const agent = g.agent()
  t.equal((await readyz(g.opsUrl)).status, 200, 'ready before close()')
  const kept = await g.raw('agent', '/challenge')
  t.equal(kept.status, 200)
  t.not(kept.headers.connection, 'close', 'before the drain a connection is kept alive')

  const t0 = performance.now()
  let closedAt = 0
  const closed = g.gate.close().then(() => { closedAt = performance.now() - t0 })
  await sleep(50)
  const r = await readyz(g.opsUrl)
  t.equal(r.status, 503, '/readyz answers 503 as soon as the drain starts')
  t.match(r.body.problems, ['shutting down'])

  // During the drain: answered normally, on the kept-alive connection too, each asking to close.
  const during = await g.raw('agent', '/challenge')
  t.equal(during.status, 200, 'GET /challenge is still served during the drain')
  t.equal(during.headers.connection, 'close', 'a response during the drain asks its client to close the connection')
  t.equal((await pass(agent)).status, 'accepted', 'a whole pass succeeds during the drain')
  t.ok(performance.now() - t0 < DRAIN, 'all of that happened within the drain delay')
  t.equal(closedAt, 0, 'close() has not finished during the drain')

  await closed
  t.ok(closedAt >= DRAIN - 20, `close() took the drain delay at least (${Math.round(closedAt)} ms >= ${DRAIN})`)
  t.ok(closedAt < DRAIN + 3000, `and not much longer with nothing in flight (${Math.round(closedAt)} ms)`)
  t.equal(await transport(request(`${g.url}/challenge`, { dispatcher: agent.dispatcher })), 'ECONNREFUSED', 'after the drain the listener refuses connections')
})

t.test('without a drain (drainDelayMs 0, the default): connections are refused as soon as close() is called', async (t) => {
  const g = await startGate(t)
  t.equal(g.config.drainDelayMs, 0)
  const agent = g.agent()
  t.equal((await pass(agent)).status, 'accepted')
  const closed = g.gate.close()
  // Refused, or (the kept-alive connection closing under it) cut: either way not answered.
  t.match(await transport(request(`${g.url}/challenge`, { dispatcher: agent.dispatcher })), /^(ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET)$/, 'lost at once: a proxy still sending here loses the request')
  await closed
})

t.test('a request in flight when the drain ends still finishes after the listener closed, with Connection: close', async (t) => {
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { drainDelayMs: 300, upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const agent = g.agent()
  t.equal((await agent.fetch('/warm')).statusCode, 200, 'a protected request before the drain')
  // The upstream holds the next request until the listener has closed.
  let release!: () => void
  const held = new Promise<void>((resolve) => { release = resolve })
  up.handler = (_req, res) => { void held.then(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('late')) }
  const closed = g.gate.close()
  const pending = agent.fetch('/slow')
  await sleep(500)
  t.equal(g.gate.inflight, 1, 'the protected request is in flight after the drain delay')
  t.equal(await transport(request(`${g.url}/challenge`, { dispatcher: g.agent().dispatcher })), 'ECONNREFUSED', 'the listener is closed')
  release()
  const res = await pending
  t.equal(res.statusCode, 200, 'the request in flight is answered')
  t.equal(res.headers.connection, 'close')
  t.equal(await res.body.text(), 'late')
  await closed
})
