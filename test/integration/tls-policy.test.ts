/**
 * The gate listener's protocol policy, with a real TLS client: AEAD cipher suites only (no
 * CBC-SHA1 at TLS 1.2), no client-initiated renegotiation, and the answers Node writes on its own
 * (an unsupported Expect, a malformed request) as problem+json like every other refusal.
 */
import t, { type Test } from 'tap'
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { startGate } from '../helpers/gate.js'
import { agentFiles } from '../helpers/pki.js'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Connect with the agent's certificate; resolves with the socket, or with the handshake's error. */
async function handshake (t: Test, url: string, opts: ConnectionOptions = {}): Promise<TLSSocket | Error> {
  const socket = tlsConnect({ host: '127.0.0.1', port: Number(new URL(url).port), servername: 'localhost', ...agentFiles('agent'), ...opts })
  t.teardown(() => socket.destroy())
  return await new Promise((resolve) => {
    socket.once('secureConnect', () => resolve(socket))
    socket.once('error', (err) => resolve(err))
    socket.once('close', () => resolve(new Error('closed during the handshake')))
  })
}

/** Send `text` on `socket` and collect what comes back until the connection closes or `until` matches. */
async function exchange (socket: TLSSocket, text: string, until: RegExp, ms = 3000): Promise<{ received: string, closed: boolean }> {
  const got = { received: '', closed: false }
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => { got.received += d })
  socket.on('close', () => { got.closed = true })
  socket.on('error', () => {})
  socket.write(text)
  const end = performance.now() + ms
  while (!got.closed && !until.test(got.received) && performance.now() < end) await sleep(10)
  return got
}

t.test('TLS 1.2 with a CBC-SHA1 suite is refused; AEAD suites are used', async (t) => {
  const g = await startGate(t)
  for (const ciphers of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA', 'ECDHE-ECDSA-AES128-SHA256']) {
    const r = await handshake(t, g.url, { maxVersion: 'TLSv1.2', ciphers })
    t.ok(r instanceof Error, `${ciphers} at TLS 1.2: refused`)
  }
  const ok = await handshake(t, g.url, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' })
  t.notOk(ok instanceof Error, 'ECDHE-ECDSA-AES128-GCM-SHA256 at TLS 1.2: accepted')
  const dflt = await handshake(t, g.url, { maxVersion: 'TLSv1.2' })
  t.notOk(dflt instanceof Error, 'a client with default settings at TLS 1.2: accepted')
  if (!(dflt instanceof Error)) t.match(dflt.getCipher().name, /GCM|CHACHA20/, `an AEAD suite (${dflt.getCipher().name})`)
  const tls13 = await handshake(t, g.url)
  t.notOk(tls13 instanceof Error, 'TLS 1.3: accepted')
  if (!(tls13 instanceof Error)) t.equal(tls13.getProtocol(), 'TLSv1.3')
})

t.test('a client-initiated renegotiation closes the connection', async (t) => {
  const g = await startGate(t)
  const socket = await handshake(t, g.url, { maxVersion: 'TLSv1.2' })
  if (socket instanceof Error) { t.fail(`handshake: ${socket.message}`); return }
  // The connection works before.
  const first = await exchange(socket, 'GET /nowhere HTTP/1.1\r\nhost: localhost\r\n\r\n', /"code":"AOG_NOT_FOUND"/)
  t.match(first.received, /^HTTP\/1\.1 404 /, 'a request before the renegotiation is answered')
  const outcome = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve('no answer'), 3000)
    socket.once('close', () => { clearTimeout(timer); resolve('closed') })
    const started = socket.renegotiate({ rejectUnauthorized: true }, (err) => {
      if (err === null) { clearTimeout(timer); resolve('renegotiated') }
    })
    if (!started) { clearTimeout(timer); resolve('not started') }
  })
  t.not(outcome, 'renegotiated', 'the renegotiation did not complete')
  t.not(outcome, 'not started', 'the client did start one (TLS 1.2)')
  const end = performance.now() + 3000
  while (!socket.destroyed && performance.now() < end) await sleep(10)
  t.ok(socket.destroyed, 'the server closed the connection')
})

t.test('an unsupported Expect gets 417 as problem+json, and the connection is closed', async (t) => {
  const g = await startGate(t)
  const socket = await handshake(t, g.url)
  if (socket instanceof Error) { t.fail(`handshake: ${socket.message}`); return }
  const r = await exchange(socket, 'GET /challenge HTTP/1.1\r\nhost: localhost\r\nexpect: something-else\r\n\r\n', /\r\n\r\n\{[^}]*\}/)
  t.match(r.received, /^HTTP\/1\.1 417 /, '417')
  t.match(r.received, /\r\ncontent-type: application\/problem\+json\r\n/i, 'problem+json')
  t.match(r.received, /\r\ncache-control: no-store\r\n/i)
  t.match(r.received, /\r\nx-content-type-options: nosniff\r\n/i)
  t.match(r.received, /\r\nconnection: close\r\n/i, 'Connection: close')
  const body = JSON.parse(r.received.slice(r.received.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
  t.same(body, { type: 'urn:aog:problem:aog-bad-request', title: 'Bad request', status: 417, detail: 'only Expect: 100-continue is supported', code: 'AOG_BAD_REQUEST' })
  // The gate still answers a well-formed Expect: 100-continue as usual.
  const s2 = await handshake(t, g.url)
  if (s2 instanceof Error) { t.fail(`handshake: ${s2.message}`); return }
  const ok = await exchange(s2, 'GET /challenge HTTP/1.1\r\nhost: localhost\r\nexpect: 100-continue\r\n\r\n', /\r\n\r\n\{[^}]*\}/)
  t.match(ok.received, /HTTP\/1\.1 200 /, 'Expect: 100-continue: answered')
})

t.test('a malformed request gets the same problem+json answer as every refusal, and the connection is closed', async (t) => {
  const g = await startGate(t)
  const socket = await handshake(t, g.url)
  if (socket instanceof Error) { t.fail(`handshake: ${socket.message}`); return }
  const r = await exchange(socket, 'GET /challenge HTTP/1.1\r\nhost: localhost\r\nbad header\r\n\r\n', /\r\n\r\n\{[^}]*\}/)
  t.match(r.received, /^HTTP\/1\.1 400 /, '400')
  t.match(r.received, /\r\ncontent-type: application\/problem\+json\r\n/i)
  t.match(r.received, /\r\ncache-control: no-store\r\n/i)
  t.match(r.received, /\r\nx-content-type-options: nosniff\r\n/i, 'with the headers of every other answer')
  t.match(r.received, /\r\nconnection: close\r\n/i)
  const body = JSON.parse(r.received.slice(r.received.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
  t.same(body, { type: 'urn:aog:problem:aog-bad-request', title: 'Bad request', status: 400, detail: 'malformed HTTP request', code: 'AOG_BAD_REQUEST' })
  const end = performance.now() + 3000
  while (!socket.destroyed && performance.now() < end) await sleep(10)
  t.ok(socket.destroyed, 'closed')
})
