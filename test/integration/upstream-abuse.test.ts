/**
 * The direct-mode proxy under attack by agents that hold a grant: a real gate (real TLS, the dev
 * certificates) with --upstream in front of a real node:http upstream. A slow reader cannot hold
 * the upstream pool past --upstream-timeout-ms nor keep other agents from their answer; client
 * headers cannot pass for the gate's own by spelling `-` as `_`; a dot-segment cannot lead out of
 * the --upstream path prefix.
 */
import t, { type Test } from 'tap'
import { connect, type TLSSocket } from 'node:tls'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles, type AgentName } from '../helpers/pki.js'
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js'
import { sleep } from '../helpers/outcome.js'
import { pass } from '../../lib/client/agent.js'
import { MemoryStore } from '../../lib/stores/memory.js'
import type { Store } from '../../lib/stores/store.js'
import { join } from 'node:path'

const KEY = join(DEV, 'assertion-key.pem')

/** A TLS connection to the gate with an agent's certificate, its bytes counted, its close time kept. */
interface Conn { socket: TLSSocket, bytes: number, text: string, closedAt: number | undefined }

async function open (t: Test, g: TestGate, who: AgentName): Promise<Conn> {
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ...agentFiles(who) })
  const c: Conn = { socket, bytes: 0, text: '', closedAt: undefined }
  t.teardown(() => { socket.destroy() })
  socket.on('error', () => {})
  socket.on('data', (d: Buffer) => {
    c.bytes += d.length
    if (c.text.length < 64 * 1024) c.text += d.toString('latin1')
  })
  socket.on('close', () => { c.closedAt = performance.now() })
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve).once('error', reject) })
  return c
}

interface Answer { status: number, headers: string, body: string, ms: number }

/** One request written as it is (no URL parsing, no header name rules), answered and closed. */
async function rawRequest (t: Test, g: TestGate, who: AgentName, head: string): Promise<Answer> {
  return await rawExchange(t, g, who, head.replace(/\n/g, '\r\n') + 'host: localhost\r\nconnection: close\r\n\r\n')
}

/** `bytes` written as they are on a new connection, answered; the answer ends when the gate closes it. */
async function rawExchange (t: Test, g: TestGate, who: AgentName, bytes: string): Promise<Answer> {
  const start = performance.now()
  const c = await open(t, g, who)
  c.socket.write(bytes)
  // No answer within 15 s is no answer: the socket is dropped and the status is NaN.
  const limit = setTimeout(() => { c.socket.destroy() }, 15_000)
  await new Promise((resolve) => c.socket.once('close', resolve))
  clearTimeout(limit)
  const end = c.text.indexOf('\r\n\r\n')
  const headers = c.text.slice(0, end)
  let body = c.text.slice(end + 4)
  if (/\r\ntransfer-encoding: chunked/i.test(headers)) body = dechunk(body)
  return { status: Number(c.text.slice(9, 12)), headers, body, ms: performance.now() - start }
}

/** A chunked body's data. */
function dechunk (text: string): string {
  let out = ''
  for (let at = 0; ;) {
    const eol = text.indexOf('\r\n', at)
    const size = parseInt(text.slice(at, eol), 16)
    if (!(size > 0)) return out
    out += text.slice(eol + 2, eol + 2 + size)
    at = eol + 2 + size + 2
  }
}

/** A /big response at the upstream: since when its writes wait for the gate to read, whether it closed unfinished. */
interface Big { blockedSince: number | undefined, closedEarly: boolean | undefined }

/** Every /big response blocked for `ms` at least: the gate has stopped reading them (its relays are paused). */
function stalledFor (big: Big[], ms: number): boolean {
  return big.every((b) => b.blockedSince !== undefined && performance.now() - b.blockedSince >= ms)
}

/** A gate fronting an echo upstream whose /big streams 200 MiB (as fast as it is read) and /hang never answers. */
async function rig (t: Test, overrides: Record<string, unknown> = {}, o: { bigDelayMs?: number, prefix?: string, store?: Store } = {}): Promise<{ g: TestGate, up: EchoUpstream, big: Big[], hangs: number, sockets: Set<Socket> }> {
  const up = await startEchoUpstream(t)
  const state = { g: undefined as unknown as TestGate, up, big: [] as Big[], hangs: 0, sockets: new Set<Socket>() }
  up.server.on('connection', (s: Socket) => { state.sockets.add(s); s.on('close', () => state.sockets.delete(s)) })
  const chunk = Buffer.alloc(64 * 1024, 97)
  up.handler = (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/big') {
      const b: Big = { blockedSince: undefined, closedEarly: undefined }
      state.big.push(b)
      res.on('close', () => { b.closedEarly = !res.writableFinished })
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      let sent = 0
      const push = (): void => {
        b.blockedSince = undefined
        while (sent < 200 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length
          if (!res.write(chunk)) { b.blockedSince = performance.now(); res.once('drain', push); return }
        }
        res.end()
      }
      setTimeout(push, o.bigDelayMs ?? 0)
      return
    }
    if (req.url === '/hang') { state.hangs++; return }
    // A byte every 100 ms for ?ms= milliseconds: a slow answer that never goes silent.
    if (req.url?.startsWith('/trickle?ms=') === true) {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const end = Date.now() + Number(req.url.slice(12))
      const tick = setInterval(() => { if (Date.now() >= end || res.destroyed) { clearInterval(tick); res.end() } else res.write('.') }, 100)
      return
    }
    req.resume()
    req.on('end', () => {
      up.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, sha256: '', bytes: 0 })
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: req.url, headers: req.headers }))
    })
  }
  state.g = await startGate(t, { upstream: up.url + (o.prefix ?? ''), assertionKey: KEY, ...overrides }, o.store === undefined ? {} : { store: o.store })
  return state
}

/** Agent 1's slow reader: GET /big, then never reads. */
async function slowReader (t: Test, g: TestGate): Promise<Conn> {
  const c = await open(t, g, 'agent')
  c.socket.write('GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n')
  await sleep(50)
  c.socket.pause()
  return c
}

async function until (cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms
  while (!cond()) {
    if (performance.now() > end) throw new Error(`not in time: ${what}`)
    await sleep(10)
  }
}

const TIMEOUT = 1500

/** `a` is the problem+json refusal `status`/`code` with Retry-After: 1, answered within `ms`. */
function refusedAtOnce (t: Test, a: Answer, status: number, code: string, ms: number, what: string): void {
  t.equal(a.status, status, `${what}: ${status}`)
  t.match(a.body, `"code":"${code}"`)
  t.match(a.headers, /\r\nretry-after: 1\r\n/i, 'with Retry-After')
  t.match(a.headers, /\r\ncontent-type: application\/problem\+json\r\n/i)
  t.ok(a.ms < ms, `at once (${Math.round(a.ms)} ms)`)
}

t.test('a slow reader holding every pool connection: another agent still gets its answer, the stalled relays are cut, no socket left', async (t) => {
  // One agent takes the whole pool here: its own bound (half of the pool by default) is lifted.
  const { g, big, sockets } = await rig(t, { upstreamConnections: 4, upstreamTimeoutMs: TIMEOUT, upstreamMaxPerIdentity: 100 })
  await pass(g.agent('agent'))
  await pass(g.agent('agent2'))
  const slow = await Promise.all(Array.from({ length: 4 }, async () => await slowReader(t, g)))
  // Every /big blocked at the upstream for a while: the gate has stopped reading them, its relays are paused.
  await until(() => big.length === 4 && stalledFor(big, 300), 10_000, 'the four relays blocked')
  const blockedAt = Math.max(...big.map((b) => b.blockedSince!))
  const probe = await rawRequest(t, g, 'agent2', 'GET /hello HTTP/1.1\n')
  t.equal(probe.status, 200, 'agent 2 gets the upstream\'s answer')
  t.match(probe.body, /"url":"\/hello"/)
  t.ok(probe.ms < TIMEOUT + 1000, `within the timeout + 1 s (${Math.round(probe.ms)} ms)`)
  await until(() => big.every((b) => b.closedEarly === true), 3000, 'the upstream responses of /big closed')
  const cutAfter = performance.now() - blockedAt
  t.ok(cutAfter < TIMEOUT + 1000, `the stalled relays were cut (upstream side closed ${Math.round(cutAfter)} ms after they blocked)`)
  await until(() => g.gate.inflight === 0, 3000, 'no request in flight at the gate')
  const lines = g.logs.map((l) => JSON.parse(l) as { route?: string, outcome?: string, status?: number }).filter((l) => l.route === 'upstream')
  t.equal(lines.filter((l) => l.outcome === 'client_stalled' && l.status === 200).length, 4, 'four relays logged as client_stalled')
  // The slow reader's connections were destroyed by the gate: reading them now finds their end
  // after what the kernel buffers held, not the 200 MiB.
  for (const c of slow) c.socket.resume()
  await until(() => slow.every((c) => c.closedAt !== undefined), 5000, 'the slow reader\'s connections closed')
  const most = Math.max(...slow.map((c) => c.bytes))
  t.ok(most < 100 * 1024 * 1024, `each got a part of the body (at most ${(most / 1048576).toFixed(1)} MiB)`)
  t.equal(slow.filter((c) => c.closedAt === undefined).length, 0, 'no slow-reader connection left open')
  t.ok(sockets.size <= 4, `at the upstream, at most the pool's 4 connections are open, idle (${sockets.size})`)
  const idle = sockets.size
  await g.gate.close()
  await until(() => sockets.size === 0, 3000, 'the upstream connections closed')
  t.equal(sockets.size, 0, `after the gate closed, none of the ${idle} upstream connections is left`)
})

t.test('the queue for a pool connection is bounded: beyond it 503 AOG_OVERLOADED at once; queued requests get their 504 and are never sent', async (t) => {
  // /big starts its body 700 ms late, so the relays stall well after the queued requests were made.
  const r = await rig(t, { upstreamConnections: 2, upstreamTimeoutMs: TIMEOUT, upstreamMaxPerIdentity: 100 }, { bigDelayMs: 700 })
  const { g, up, big, sockets } = r
  await pass(g.agent('agent'))
  await pass(g.agent('agent2'))
  const slow = await Promise.all(Array.from({ length: 2 }, async () => await slowReader(t, g)))
  await until(() => big.length === 2, 5000, 'both /big at the upstream')
  // 2 connections: 8 requests may wait for one. Agent 1 takes every place.
  const queuedAt = performance.now()
  const queued = Array.from({ length: 8 }, async () => await rawRequest(t, g, 'agent', 'GET /hang HTTP/1.1\n'))
  await sleep(300)
  const full = await rawRequest(t, g, 'agent2', 'GET /hello HTTP/1.1\n')
  refusedAtOnce(t, full, 503, 'AOG_OVERLOADED', 500, 'the queue is full')
  const answers = await Promise.all(queued)
  t.same(answers.map((a) => a.status), Array(8).fill(504), 'each queued request: 504')
  t.ok(answers.every((a) => /"code":"AOG_UPSTREAM_TIMEOUT"/.test(a.body)))
  const waited = performance.now() - queuedAt
  t.ok(waited < TIMEOUT + 1000, `within the timeout + 1 s (${Math.round(waited)} ms)`)
  // The stalled relays are cut in turn; the connections freed find the queued requests already answered.
  await until(() => big.every((b) => b.closedEarly === true), 5000, 'the stalled relays cut')
  const again = await rawRequest(t, g, 'agent2', 'GET /hello HTTP/1.1\n')
  t.equal(again.status, 200, 'once the pool is free, agent 2 gets its answer')
  t.equal(up.seen.filter((e) => e.url === '/hello').length, 1, 'the refused request never reached the upstream')
  t.equal(up.seen.length, 1)
  t.equal(r.hangs, 0, 'no request answered 504 while queued was sent to the upstream')
  for (const c of slow) c.socket.resume()
  await until(() => slow.every((c) => c.closedAt !== undefined), 5000, 'the slow reader\'s connections closed')
  await until(() => g.gate.inflight === 0, 3000, 'no request in flight at the gate')
  t.ok(sockets.size <= 2, `at the upstream, only idle pool connections (${sockets.size})`)
})

t.test('one identity has at most --upstream-max-per-identity proxied requests in flight: beyond, 429 at once and the grant is not spent; another identity is served; an ended exchange frees its place', async (t) => {
  // Three protected requests per pass: two held, one refused (not counted), one more.
  const r = await rig(t, { upstreamConnections: 8, upstreamMaxPerIdentity: 2, upstreamTimeoutMs: 10_000, grantMaxRequests: 3 })
  const { g, up } = r
  await pass(g.agent('agent'))
  await pass(g.agent('agent2'))
  const held = await Promise.all([0, 1].map(async () => {
    const c = await open(t, g, 'agent')
    c.socket.write('GET /hang HTTP/1.1\r\nhost: localhost\r\n\r\n')
    return c
  }))
  await until(() => r.hangs === 2, 5000, 'both held at the upstream')
  const third = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  refusedAtOnce(t, third, 429, 'AOG_RATE_LIMITED', 1000, 'a third in flight')
  t.equal(up.seen.length, 0, 'it never reached the upstream')
  // Told apart from the token bucket's 429: in the metric and in the request line.
  const limited = (await g.metrics.rateLimited.get()).values.map((v) => ({ ...v.labels, n: v.value }))
  t.same(limited, [{ route: 'upstream', limit: 'in_flight', n: 1 }], 'counted as the in-flight limit, not the rate')
  await until(() => g.logs.some((l) => l.includes('"outcome":"in_flight_limit"')), 2000, 'the request line written')
  const line = g.logs.map((l) => JSON.parse(l) as { route?: string, status?: number, outcome?: string }).filter((l) => l.status === 429)
  t.match(line, [{ route: 'upstream', status: 429, outcome: 'in_flight_limit' }], 'its request line says which limit')
  const other = await rawRequest(t, g, 'agent2', 'GET /hello HTTP/1.1\n')
  t.equal(other.status, 200, 'another identity is served meanwhile')
  // The agent drops one held exchange: the gate ends it, and its place is free again.
  held[0]!.socket.destroy()
  await until(() => g.gate.inflight === 1, 5000, 'the dropped exchange ended at the gate')
  const again = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  t.equal(again.status, 200, 'a place freed: served, and the refused request did not spend the grant (its third request)')
  const spent = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  t.equal(spent.status, 401, 'the grant\'s three requests are spent')
  t.match(spent.body, /"code":"AOG_GRANT_REQUIRED"/)
  held[1]!.socket.destroy()
  await until(() => g.gate.inflight === 0, 5000, 'no request in flight at the gate')
})

t.test('pipelined proxied requests on a connection that is then dropped: each ends, its place in the identity\'s bound is freed, nothing stays in flight', async (t) => {
  const r = await rig(t, { upstreamMaxPerIdentity: 2, upstreamTimeoutMs: 10_000 })
  const { g, up } = r
  await pass(g.agent('agent'))
  // The answer to the second request is queued behind the first's, which never ends: node gives a
  // queued response neither 'finish' nor 'close' when the connection is destroyed.
  for (const [i, method] of ['GET', 'HEAD', 'GET'].entries()) {
    const c = await open(t, g, 'agent')
    c.socket.write(`GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n${method} /small HTTP/1.1\r\nhost: localhost\r\n\r\n`)
    await until(() => up.seen.filter((e) => e.url === '/small').length === i + 1, 5000, `the second request of connection ${i + 1} answered by the upstream`)
    await sleep(100)
    c.socket.destroy()
    await until(() => g.gate.inflight === 0, 5000, `connection ${i + 1}: both exchanges ended at the gate`)
  }
  const after = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  t.equal(after.status, 200, 'the identity\'s places were all freed: served')
  const lines = g.logs.map((l) => JSON.parse(l) as { route?: string, path?: string, outcome?: string }).filter((l) => l.route === 'upstream')
  t.equal(lines.filter((l) => l.outcome === 'client_closed').length, 6, 'each of the six dropped exchanges booked as client_closed')
})

t.test('requests answered 504 while queued keep their identity\'s places until the upstream pool lets go of them: the bound holds for abandoned requests too', async (t) => {
  // Two pool connections, both taken by agent2's slow answers; agent's requests queue behind them.
  const r = await rig(t, { upstreamConnections: 2, upstreamMaxPerIdentity: 2, upstreamTimeoutMs: 800, grantMaxRequests: 10 })
  const { g, up } = r
  await pass(g.agent('agent'))
  await pass(g.agent('agent2'))
  const slow = [0, 1].map(async () => await rawRequest(t, g, 'agent2', 'GET /trickle?ms=5000 HTTP/1.1\n'))
  await until(() => r.sockets.size === 2, 5000, 'agent2 holds both pool connections')
  await sleep(100)
  const queued = await Promise.all([0, 1].map(async () => await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')))
  t.same(queued.map((a) => a.status), [504, 504], 'both queued requests timed out')
  const third = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  refusedAtOnce(t, third, 429, 'AOG_RATE_LIMITED', 500, 'the two abandoned requests still queued hold the places')
  t.same((await Promise.all(slow)).map((a) => a.status), [200, 200], 'agent2\'s slow answers complete')
  await until(() => g.gate.inflight === 0, 5000, 'no request in flight at the gate')
  const after = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  t.equal(after.status, 200, 'the pool dropped the abandoned requests: their places are free, served')
  t.equal(up.seen.filter((e) => e.url === '/hello').length, 1, 'the abandoned requests never reached the upstream')
})

/** A memory store whose authorize takes 100 ms (a Redis round trip on a busy network). */
function slowAuthorizeStore (): Store {
  const store = new MemoryStore({ maxChallenges: 1000 })
  const authorize = store.authorize.bind(store)
  store.authorize = async (...a) => { await sleep(100); return await authorize(...a) }
  return store
}

t.test('a client that leaves while the gate decides (a slow store), halfway through its upload: its place and its pool connection are freed', async (t) => {
  const r = await rig(t, { upstreamConnections: 2, upstreamMaxPerIdentity: 1, upstreamTimeoutMs: 1000, grantMaxRequests: 100 }, { store: slowAuthorizeStore() })
  const { g, up } = r
  await pass(g.agent('agent'))
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200, 'before: served')
  for (let i = 0; i < 3; i++) {
    const c = await open(t, g, 'agent')
    c.socket.write('POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n0123456789')
    await sleep(30)
    c.socket.destroy()
    await until(() => g.gate.inflight === 0, 5000, `upload ${i + 1}: no request in flight at the gate`)
  }
  const after = await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')
  t.equal(after.status, 200, 'the identity is served (its one place was freed each time)')
  t.equal(up.seen.filter((e) => e.url === '/upload').length, 0, 'the abandoned uploads never reached the upstream')
  const lines = g.logs.map((l) => JSON.parse(l) as { route?: string, outcome?: string }).filter((l) => l.route === 'upstream')
  t.same(lines.map((l) => l.outcome), ['ok', 'client_closed', 'client_closed', 'client_closed', 'ok'], 'each upload booked as client_closed')
})

/** The header names the upstream received, as it lowercases them. */
const namesOf = (a: Answer): Record<string, unknown> => (JSON.parse(a.body) as { headers: Record<string, unknown> }).headers

t.test('a client header spelled with `_` for `-` is dropped like the header it stands for; every X-Forwarded-* is dropped', async (t) => {
  const { g } = await rig(t)
  await pass(g.agent('agent'))
  const smuggled = [
    'X_AOG_Agent: forged', 'x_aog_agent: forged', 'X-AOG_Agent: forged', 'X_Aog_Fingerprint: forged',
    'X_Forwarded_For: 6.6.6.6', 'X-Forwarded_For: 6.6.6.6', 'X_Forwarded_Proto: http', 'X_Forwarded_Host: evil.example',
    'X-Forwarded-Port: 1', 'X-Forwarded-Prefix: /evil', 'X-Forwarded-Server: evil.example', 'X-Forwarded-Ssl: off',
    'X_Forwarded_Port: 1', 'x-forwarded-anything: evil',
    'X_Real_IP: 6.6.6.6', 'X_Request_Id: chosen', 'Proxy_Authorization: Basic Zm9vOmJhcg==', 'Keep_Alive: timeout=5',
    'Proxy_Connection: keep-alive',
  ]
  const kept = ['X_Custom: kept', 'X-Forwardedness: kept', 'X-AOGless: kept', 'X_Forwarded: kept']
  const a = await rawRequest(t, g, 'agent', `GET /h HTTP/1.1\n${[...smuggled, ...kept].join('\n')}\n`)
  t.equal(a.status, 200)
  const h = namesOf(a)
  const names = Object.keys(h)
  for (const line of smuggled) {
    const name = line.slice(0, line.indexOf(':')).toLowerCase()
    t.notOk(names.includes(name), `${name} is not forwarded`)
  }
  t.same(names.filter((n) => n.replaceAll('_', '-').startsWith('x-forwarded-')).sort(), ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto'], 'only the gate\'s X-Forwarded-*')
  t.equal(h['x-forwarded-for'], '127.0.0.1')
  t.equal(h['x-forwarded-proto'], 'https')
  t.equal(h['x-forwarded-host'], 'localhost')
  t.equal(h['x-real-ip'], '127.0.0.1')
  t.notOk(String(h['x-aog-agent']).includes('forged'), 'X-AOG-Agent is the gate\'s assertion')
  t.equal(names.filter((n) => n.replaceAll('_', '-').startsWith('x-aog-')).length, 1, 'one X-AOG-* header: the gate\'s')
  t.not(h['x-request-id'], 'chosen')
  t.equal(h['x-custom'], undefined, 'node reads X_Custom as its own name')
  t.equal(h.x_custom, 'kept', 'a name with `_` that stands for no dropped header passes')
  t.equal(h['x-forwardedness'], 'kept')
  t.equal(h['x-aogless'], 'kept')
  t.equal(h.x_forwarded, 'kept', 'X_Forwarded (no dash after it) is no X-Forwarded-* header')

  // A header that Connection names, under either spelling, is dropped too.
  const b = await rawRequest(t, g, 'agent', 'GET /h HTTP/1.1\nConnection: x_hop, X-Other\nX-Hop: 1\nX_Other: 1\nX-Not-Named: 1\n')
  const n2 = Object.keys(namesOf(b))
  t.notOk(n2.includes('x-hop'), 'X-Hop named by Connection as x_hop')
  t.notOk(n2.includes('x_other'), 'X_Other named by Connection as X-Other')
  t.ok(n2.includes('x-not-named'))
})

t.test('a dot-segment in the path is refused with 400 before the grant is spent, in every spelling; dots in names pass', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 6 }, { prefix: '/base' })
  await pass(g.agent('agent'))
  const refused = ['/x/../../admin', '/..', '/x/..', '/./admin', '/x/.', '/x/./y', '/%2e%2e/admin', '/x/%2E%2e/%2e%2E/admin', '/x/.%2E/admin',
    '/x/%2e./admin', '/%2e/admin', '/x/%2E', '/x/..%2fadmin', '/x/..%2Fadmin', '/x/%2e%2e%5cadmin', '/x/..;/admin', '/x/..?q=1', '/x/..\\admin']
  for (const target of refused) {
    const a = await rawRequest(t, g, 'agent', `GET ${target} HTTP/1.1\n`)
    t.equal(a.status, 400, `${target}: 400`)
    t.match(a.body, /"code":"AOG_BAD_REQUEST"/)
    t.match(a.headers, /\r\ncontent-type: application\/problem\+json\r\n/i)
  }
  t.equal(up.seen.length, 0, 'none reached the upstream')
  // The grant's 6 requests are all left: the refusals spent none.
  const passed = ['/a.b/c..d/.well-known/x', '/...', '/x/..a/.b', '/x.y/%2e%2ex', '/x?path=/../../admin', '/.x./']
  for (const target of passed) {
    const a = await rawRequest(t, g, 'agent', `GET ${target} HTTP/1.1\n`)
    t.equal(a.status, 200, `${target}: proxied`)
  }
  t.same(up.seen.map((e) => e.url), passed.map((p) => '/base' + p), 'under the prefix, byte for byte')
  t.equal((await rawRequest(t, g, 'agent', 'GET /one-more HTTP/1.1\n')).status, 401, 'and the budget was exactly the 6 proxied ones')
})

/** `a` is the gate's 400 AOG_BAD_REQUEST problem+json, its connection closed. */
function badRequest (t: Test, a: Answer, what: string): void {
  t.equal(a.status, 400, `${what}: 400`)
  t.match(a.body, /"code":"AOG_BAD_REQUEST"/, `${what}: AOG_BAD_REQUEST`)
  t.match(a.headers, /\r\ncontent-type: application\/problem\+json\r\n/i, `${what}: problem+json`)
}

t.test('a target with "#" is refused with 400 before the grant is spent, on the proxy and on the gate\'s own routes', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 2 }, { prefix: '/base' })
  await pass(g.agent('agent'))
  // `/base/..#x` is `/` to nginx and to WHATWG URL: out of the prefix by one level.
  for (const target of ['/..#x', '/%2e%2e#', '/..#', '/sub/..#', '/hello#x', '/hello?q=1#x', '/challenge#x', '/task#', '/auth#x', '/.well-known/aog/openapi.json#x']) {
    badRequest(t, await rawRequest(t, g, 'agent', `GET ${target} HTTP/1.1\n`), target)
  }
  t.equal(up.seen.length, 0, 'none reached the upstream')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello?q=%23 HTTP/1.1\n')).status, 200, 'an escaped # (%23) is proxied')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200)
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 401, 'the refusals spent none of the grant\'s 2 requests')
  t.same(up.seen.map((e) => e.url), ['/base/hello?q=%23', '/base/hello'])
})

t.test('a path with a dot-segment under /auth/ (Envoy\'s form) is 400 before the grant is spent: it never reaches /auth', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 2 })
  await pass(g.agent('agent'))
  // Through nginx these came in by `location = /challenge` (the normalised path) with the raw target.
  const tries = [
    'GET /auth/../challenge HTTP/1.1\nX-Original-Method: GET\nX-Original-URI: /auth/../challenge\n',
    'GET /auth/x/../../.well-known/aog/z HTTP/1.1\nX-Original-Method: GET\nX-Original-URI: /x\n',
    'DELETE /auth/%2e%2e/task HTTP/1.1\n',
    'GET /auth/.%2E/hello HTTP/1.1\n',
  ]
  for (const head of tries) {
    const a = await rawRequest(t, g, 'agent', head)
    badRequest(t, a, head.slice(0, head.indexOf(' HTTP')))
    t.notMatch(a.headers, /x-aog-agent/i, 'no X-AOG-Agent handed to the agent')
  }
  const ok = await rawRequest(t, g, 'agent', 'GET /auth/hello HTTP/1.1\n')
  t.equal(ok.status, 200, 'Envoy\'s form still answers a plain path')
  t.match(ok.headers, /\r\nx-aog-agent: /i)
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200, 'one request of the grant left: the refusals spent none')
  t.equal(up.seen.length, 1)
})

t.test('Host: an HTTP/1.1 request without one, or any request with two, is 400 before the grant is spent', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 3 })
  await pass(g.agent('agent'))
  badRequest(t, await rawExchange(t, g, 'agent', 'GET /hello HTTP/1.1\r\nconnection: close\r\n\r\n'), 'no Host')
  badRequest(t, await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\nHost: evil.example\n'), 'two Host fields')
  badRequest(t, await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\nHOST: localhost\n'), 'two, one upper case')
  badRequest(t, await rawExchange(t, g, 'agent', 'GET /hello HTTP/1.0\r\nHost: a\r\nhOsT: b\r\n\r\n'), 'two in HTTP/1.0')
  badRequest(t, await rawExchange(t, g, 'agent', 'GET /challenge HTTP/1.1\r\nconnection: close\r\n\r\n'), 'no Host on a gate route')
  t.equal(up.seen.length, 0, 'none reached the upstream')
  t.equal((await rawExchange(t, g, 'agent', 'GET /hello HTTP/1.0\r\n\r\n')).status, 200, 'HTTP/1.0 without Host is served')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\nX-Hos: 1\nHost1: 2\nhost-x: 3\n')).status, 200, 'names like Host are not Host')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200)
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 401, 'the refusals spent none of the grant\'s 3 requests')
})

t.test('a Transfer-Encoding other than chunked alone is 400, naming it, before the grant is spent; chunked in any case is proxied', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 2 })
  await pass(g.agent('agent'))
  const body = '5\r\nhello\r\n0\r\n\r\n'
  const gz = await rawExchange(t, g, 'agent', `POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n${body}`)
  badRequest(t, gz, 'gzip, chunked')
  t.match(gz.body, /gzip, chunked/, 'the refusal names the coding')
  badRequest(t, await rawExchange(t, g, 'agent', `POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body}`), 'chunked twice')
  badRequest(t, await rawExchange(t, g, 'agent', `POST /task HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: deflate, chunked\r\nConnection: close\r\n\r\n${body}`), 'on a gate route')
  t.equal(up.seen.length, 0, 'none reached the upstream')
  const ok = await rawExchange(t, g, 'agent', `POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\nConnection: close\r\n\r\n${body}`)
  t.equal(ok.status, 200, 'chunked, in any case: proxied')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200)
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 401, 'the refusals spent none of the grant\'s 2 requests')
})

t.test('a Content-Length over --upstream-max-body-bytes is 413 before the grant is spent, and the connection closed', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 2, upstreamMaxBodyBytes: 10 })
  await pass(g.agent('agent'))
  for (let i = 0; i < 3; i++) {
    const a = await rawExchange(t, g, 'agent', `POST /h HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n${'x'.repeat(11)}`)
    t.equal(a.status, 413, `413 (${i + 1})`)
    t.match(a.body, /"code":"AOG_BODY_TOO_LARGE"/)
    t.match(a.headers, /\r\nconnection: close(\r\n|$)/i, 'the connection is closed (its body is not read)')
  }
  t.equal(up.seen.length, 0, 'none reached the upstream')
  t.equal((await rawExchange(t, g, 'agent', 'POST /h HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789')).status, 200, 'at the limit: proxied')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200)
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 401, 'the 413s spent none of the grant\'s 2 requests')
})

t.test('CONNECT is answered 400 AOG_BAD_REQUEST (problem+json) and its connection closed, before the grant is spent', async (t) => {
  const { g, up } = await rig(t, { grantMaxRequests: 1 })
  await pass(g.agent('agent'))
  for (const target of [new URL(up.url).host, '/x', '/challenge']) {
    const a = await rawExchange(t, g, 'agent', `CONNECT ${target} HTTP/1.1\r\nHost: ${new URL(up.url).host}\r\n\r\n`)
    badRequest(t, a, `CONNECT ${target}`)
    t.match(a.headers, /\r\nconnection: close(\r\n|$)/i, 'Connection: close')
    t.ok(a.ms < 5000, 'the gate closed the connection (not the test\'s limit)')
  }
  t.equal(up.seen.length, 0, 'nothing reached the upstream')
  t.equal((await rawRequest(t, g, 'agent', 'GET /hello HTTP/1.1\n')).status, 200, 'the grant\'s one request is left')
  await until(() => g.logs.some((l) => l.includes('"method":"CONNECT"')), 2000, 'the CONNECT booked')
  const line = JSON.parse(g.logs.find((l) => l.includes('"method":"CONNECT"'))!)
  t.match(line, { msg: 'request', method: 'CONNECT', status: 400, outcome: 'AOG_BAD_REQUEST' }, 'logged like any refusal')
})
