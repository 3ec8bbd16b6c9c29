/**
 * What a red team found at the edges of the listener: a pipelined flood whose socket is destroyed
 * is still booked (log line, in-flight count, prompt shutdown); a client that leaves mid-body is
 * no "unexpected error"; a request without Host (or with two), and CONNECT, get the gate's own 400;
 * idle sockets cannot keep the operations listener out of reach for long.
 */
import t from 'tap'
import { connect as tcpConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { request } from 'undici'
import { startGate } from '../helpers/gate.js'
import { join } from 'node:path'
import { DEV, agentFiles } from '../helpers/pki.js'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function agentSocket (port: number): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ...agentFiles('agent') })
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
  return socket
}

async function until (what: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!what()) {
    if (Date.now() > end) return false
    await sleep(20)
  }
  return true
}

t.test('a pipelined flood on a connection that is then destroyed: every request booked, shutdown prompt', async (t) => {
  const g = await startGate(t)
  const port = Number(new URL(g.url).port)
  const socket = await agentSocket(port)
  // Write without reading answers for up to 2 s: node gives up on the connection with many
  // responses still queued behind the one being written.
  const state = { closed: false }
  socket.on('close', () => { state.closed = true })
  const batch = 'GET /challenge HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(500)
  const until2s = Date.now() + 2000
  while (Date.now() < until2s && !state.closed) {
    if (!socket.write(batch)) await new Promise((resolve) => { socket.once('drain', resolve); setTimeout(resolve, 100) })
  }
  socket.destroy()
  t.ok(await until(() => g.gate.inflight === 0, 5000), `every request left the in-flight count (${g.gate.inflight} left)`)
  const issued = (await g.metrics.challengesIssued.get()).values.reduce((n, v) => n + v.value, 0)
  const lines = g.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request')
  t.ok(issued >= 1, `${issued} challenges issued`)
  t.ok(lines.length >= issued, `one request line per handled request (${lines.length} lines, ${issued} issued)`)
  const started = Date.now()
  await g.gate.close()
  t.ok(Date.now() - started < 5000, `close() returned in ${Date.now() - started} ms (not the 30 s shutdown timeout)`)
})

t.test('a client that leaves in the middle of its body: logged as 499, no unexpected error, no 503 counted', async (t) => {
  const g = await startGate(t)
  const socket = await agentSocket(Number(new URL(g.url).port))
  socket.write('POST /task HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"nonce":')
  await sleep(200)
  socket.destroy()
  const lines = (): any[] => g.logs.map((l) => JSON.parse(l))
  t.ok(await until(() => lines().some((l) => l.msg === 'request' && l.route === '/task'), 5000), 'the request is booked')
  const line = lines().find((l) => l.msg === 'request' && l.route === '/task')
  t.match(line, { status: 499, outcome: 'client_closed' })
  t.notOk(lines().some((l) => l.msg === 'unexpected error'), 'no "unexpected error" line')
  const unavailable = (await g.metrics.submissions.get()).values.filter((v) => v.labels.reason === 'AOG_UNAVAILABLE')
  t.same(unavailable, [], 'no AOG_UNAVAILABLE submission counted')
})

t.test('an HTTP/1.1 request without Host, or one with two, gets the gate\'s 400 problem+json (RFC 9112 3.2), not node\'s bare 400', async (t) => {
  const g = await startGate(t)
  const exchange = async (bytes: string): Promise<string> => {
    const socket = await agentSocket(Number(new URL(g.url).port))
    let text = ''
    socket.on('data', (d: Buffer) => { text += d.toString('latin1') })
    socket.write(bytes)
    t.ok(await until(() => text.includes('\r\n\r\n') && text.includes('}'), 3000), 'an answer came')
    socket.destroy()
    return text
  }
  for (const [what, bytes] of [['no Host', 'GET /challenge HTTP/1.1\r\n\r\n'], ['two Host fields', 'GET /challenge HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n'],
    ['two, with Expect', 'POST /task HTTP/1.1\r\nHost: a\r\nHost: b\r\nExpect: nothing\r\n\r\n']] as const) {
    const text = await exchange(bytes)
    t.match(text, /^HTTP\/1\.1 400 /, `${what}: 400`)
    t.match(text, /content-type: application\/problem\+json/i)
    t.match(text, /"code":"AOG_BAD_REQUEST"/)
  }
  t.match(await exchange('GET /nope HTTP/1.0\r\n\r\n'), /^HTTP\/1\.1 404 .*"code":"AOG_NOT_FOUND"/s, 'HTTP/1.0 needs no Host')
  const line = g.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.route === '/challenge')
  t.match(line, { method: 'GET', status: 400, outcome: 'AOG_BAD_REQUEST' }, 'booked under its route, like any refusal')
})

t.test('CONNECT gets the gate\'s 400 problem+json and its connection is closed (node would close it unanswered)', async (t) => {
  const g = await startGate(t)
  const socket = await agentSocket(Number(new URL(g.url).port))
  let text = ''
  let closed = false
  socket.on('data', (d: Buffer) => { text += d.toString('latin1') })
  socket.on('close', () => { closed = true })
  socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n')
  t.ok(await until(() => closed, 3000), 'the gate closed the connection')
  t.match(text, /^HTTP\/1\.1 400 /)
  t.match(text, /\r\nconnection: close\r\n/i)
  t.match(text, /content-type: application\/problem\+json/i)
  t.match(text, /"code":"AOG_BAD_REQUEST"/)
  t.ok(await until(() => g.logs.some((l) => l.includes('"method":"CONNECT"')), 2000), 'booked')
  t.equal(g.gate.inflight, 0, 'nothing left in flight')
  // Clients that leave at once: no unhandled socket error, the gate still serves.
  for (let i = 0; i < 20; i++) {
    const gone = await agentSocket(Number(new URL(g.url).port))
    gone.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n')
    gone.destroy()
  }
  await sleep(300)
  t.equal((await g.raw('agent', '/challenge')).status, 200, 'the gate still serves')
})

t.test('CONNECT pipelined behind requests still being answered: the connection is closed, the requests before it booked, and the gate lives on', async (t) => {
  const g = await startGate(t)
  const port = Number(new URL(g.url).port)
  for (const before of ['GET /challenge HTTP/1.1\r\nHost: x\r\n\r\n', 'GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\nGET /challenge HTTP/1.1\r\nHost: x\r\n\r\n']) {
    const socket = await agentSocket(port)
    let closed = false
    socket.resume()
    socket.on('close', () => { closed = true })
    socket.write(`${before}CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n`)
    t.ok(await until(() => closed, 3000), 'the connection is closed')
  }
  await sleep(200)
  t.equal((await g.raw('agent', '/challenge')).status, 200, 'the gate still serves')
  t.equal(g.gate.inflight, 0, 'nothing left in flight')
})

t.test('a refusal before routing on /auth is answered as /auth answers refusals (403 with X-AOG-Code), so auth_request passes it on', async (t) => {
  const g = await startGate(t, { upstream: 'http://127.0.0.1:9', assertionKey: join(DEV, 'assertion-key.pem') })
  const socket = await agentSocket(Number(new URL(g.url).port))
  let text = ''
  socket.on('data', (d: Buffer) => { text += d.toString('latin1') })
  socket.write('GET /auth HTTP/1.1\r\nHost: x\r\nHost: y\r\nX-Original-Method: GET\r\nX-Original-URI: /\r\n\r\n')
  t.ok(await until(() => text.includes('}'), 3000), 'answered')
  socket.destroy()
  t.match(text, /^HTTP\/1\.1 403 /)
  t.match(text, /\r\nx-aog-code: AOG_BAD_REQUEST\r\n/i)
  t.match(text, /"detail":"the request has more than one Host header"/)
})

t.test('idle sockets cannot keep the operations listener out of reach for long', async (t) => {
  const g = await startGate(t)
  const ops = new URL(g.opsUrl)
  const idle: Socket[] = []
  t.teardown(() => { for (const s of idle) s.destroy() })
  for (let i = 0; i < 80; i++) {
    const s = tcpConnect({ host: ops.hostname, port: Number(ops.port) })
    s.on('error', () => {})
    idle.push(s)
  }
  await sleep(500)
  // The listener holds 64 connections; the idle ones are closed at its 5 s headers timeout.
  await sleep(6500)
  const res = await request(g.opsUrl + '/healthz')
  t.equal(res.statusCode, 200, '/healthz answers within seconds, not after node\'s default 60 s')
  await res.body.text()
})
