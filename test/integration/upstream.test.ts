/** The direct-mode reverse proxy (lib/upstream.ts) between real servers: a node:http front that forwards, and a node:http(s) upstream. */
import t, { type Test } from 'tap'
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http'
import https from 'node:https'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { AogError } from '../../lib/errors.js'
import { Upstream, type ForwardResult, type UpstreamOptions } from '../../lib/upstream.js'
import { pem } from '../helpers/pki.js'
import { liveGrowth } from '../helpers/memory.js'

const MiB = 1024 * 1024
const ASSERTION = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJGIn0.c2lnbmF0dXJl'

/** What the upstream saw, for the assertions. */
interface UpState {
  connections: number
  requests: number
  /** Resolved with each request's response once it closes: true when it closed before finishing. */
  closed: Array<Promise<boolean>>
  /** sha256 of the bodies it streamed (?do=download). */
  sent: string[]
}

interface Echo { method: string, url: string, headers: IncomingHttpHeaders, rawHeaders: string[], sha256: string, bytes: number }

/** Deterministic-looking data without buffering it: a random block, each copy stamped with its index. */
function * blocks (total: number, block: Buffer): Generator<Buffer> {
  for (let i = 0, left = total; left > 0; i++, left -= block.length) {
    const b = Buffer.from(block.subarray(0, Math.min(block.length, left)))
    b.writeUInt32BE(i, 0)
    yield b
  }
}

function upstreamHandler (state: UpState) {
  const block = randomBytes(64 * 1024)
  return (req: IncomingMessage, res: ServerResponse): void => {
    state.requests++
    state.closed.push(new Promise((resolve) => { res.once('close', () => { resolve(!res.writableFinished) }) }))
    const q = new URL(req.url ?? '/', 'http://x').searchParams
    switch (q.get('do')) {
      case 'status': {
        const code = Number(q.get('code'))
        res.writeHead(code, { 'x-up': 'yes', 'content-type': 'text/plain', 'content-length': '4' }).end('boom')
        return
      }
      case 'cookies':
        res.statusMessage = 'Made It'
        res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; HttpOnly'])
        res.setHeader('connection', 'keep-alive, X-Up-Hop')
        res.setHeader('x-up-hop', 'gone')
        res.setHeader('keep-alive', 'timeout=5')
        res.setHeader('proxy-authenticate', 'Basic')
        res.setHeader('proxy-connection', 'keep-alive')
        res.setHeader('trailer', 'x-sum')
        res.setHeader('x-kept', ['one', 'two'])
        res.writeHead(201)
        res.write('chunk one,')
        res.end('chunk two')
        return
      case 'stall':
        return
      case 'reset':
        req.socket.destroy()
        return
      case 'slowbody':
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('part of it')
        return
      case 'trickle': {
        // A byte every 50 ms until the response is closed: a connection held, never silent.
        res.writeHead(200, { 'content-type': 'text/plain' })
        const timer = setInterval(() => res.write('.'), 50)
        res.once('close', () => { clearInterval(timer) })
        return
      }
      case 'hangread':
        req.pause()
        return
      case 'early':
        // Answers at once and streams the request body back as it comes.
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        res.flushHeaders()
        req.pipe(res)
        return
      case 'download': {
        const hash = createHash('sha256')
        const data = Readable.from(blocks(Number(q.get('bytes')), block))
        data.on('data', (c: Buffer) => hash.update(c))
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': q.get('bytes') ?? '0' })
        pipeline(data, res).then(() => { state.sent.push(hash.digest('hex')) }, () => {})
        return
      }
    }
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { hash.update(c); bytes += c.length })
    req.on('end', () => {
      const echo: Echo = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, sha256: hash.digest('hex'), bytes }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(echo))
    })
  }
}

interface Rig {
  port: number
  upPort: number
  up: UpState
  upstream: Upstream
  results: ForwardResult[]
  errors: unknown[]
}

/** An upstream (http, or https with the dev server certificate), an Upstream to it and a front server forwarding to it. */
async function rig (t: Test, opts: Partial<UpstreamOptions> & { tls?: boolean, prefix?: string, host?: string } = {}): Promise<Rig> {
  const up: UpState = { connections: 0, requests: 0, closed: [], sent: [] }
  const upServer = opts.tls === true
    ? https.createServer({ cert: pem('server.pem'), key: pem('server-key.pem') }, upstreamHandler(up))
    : http.createServer(upstreamHandler(up))
  upServer.on(opts.tls === true ? 'secureConnection' : 'connection', () => { up.connections++ })
  upServer.listen(0, '127.0.0.1')
  await once(upServer, 'listening')
  const upPort = (upServer.address() as AddressInfo).port
  const upstream = new Upstream({
    url: `${opts.tls === true ? 'https' : 'http'}://${opts.host ?? '127.0.0.1'}:${upPort}${opts.prefix ?? ''}`,
    maxBodyBytes: 100 * MiB,
    timeoutMs: 5000,
    connections: 8,
    ...opts,
  })
  const results: ForwardResult[] = []
  const errors: unknown[] = []
  const front = http.createServer((req, res) => {
    upstream.forward(req, res, { clientIp: req.socket.remoteAddress ?? '', proto: 'https', host: req.headers.host ?? '', assertion: ASSERTION }).then(
      (r) => { results.push(r) },
      (err: unknown) => {
        errors.push(err)
        if (err instanceof AogError && !res.headersSent) res.writeHead(err.status, { 'content-type': 'application/json' }).end(JSON.stringify({ code: err.code }))
        else res.destroy()
      })
  })
  front.listen(0, '127.0.0.1')
  await once(front, 'listening')
  t.teardown(async () => {
    front.closeAllConnections()
    upServer.closeAllConnections()
    await upstream.close()
    await Promise.all([new Promise((resolve) => front.close(resolve)), new Promise((resolve) => upServer.close(resolve))])
  })
  return { port: (front.address() as AddressInfo).port, upPort, up, upstream, results, errors }
}

interface Reply { status: number, statusMessage: string, headers: IncomingHttpHeaders, rawHeaders: string[], body: Buffer }

/** One request over its own connection (node:http, which sends any header it is given). */
async function call (port: number, path: string, o: { method?: string, headers?: OutgoingHttpHeaders, body?: Buffer | Readable } = {}): Promise<Reply> {
  const req = http.request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: o.headers, agent: false })
  const response = once(req, 'response') as Promise<[IncomingMessage]>
  // A refusal may come while the body is still being sent; the answer is what counts.
  req.on('error', () => {})
  if (o.body instanceof Readable) pipeline(o.body, req).catch(() => {})
  else req.end(o.body)
  const [res] = await response
  const chunks: Buffer[] = []
  for await (const c of res) chunks.push(c as Buffer)
  req.destroy()
  return { status: res.statusCode ?? 0, statusMessage: res.statusMessage ?? '', headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }
}

async function until (cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await sleep(10)
  }
}

const json = (r: Reply): any => JSON.parse(r.body.toString())

t.test('request headers: hop-by-hop, client X-AOG-* and X-Forwarded-* dropped (also spelled with `_`), X-AOG-Agent and X-Forwarded-* set, upstream Host, prefix + target', async (t) => {
  const r = await rig(t, { prefix: '/base/' })
  const reply = await call(r.port, '/a/b%20c/?x=1&y=%2F&x=2', {
    method: 'POST',
    headers: {
      host: 'gate.example:8443',
      connection: 'keep-alive, X-Hop',
      'x-hop': 'named by Connection',
      'keep-alive': 'timeout=5',
      'proxy-connection': 'keep-alive',
      te: 'trailers',
      trailer: 'x-sum',
      'proxy-authorization': 'Basic Zm9vOmJhcg==',
      'x-aog-agent': 'forged',
      'X-AOG-Fingerprint': 'forged',
      'x-Aog-Anything': 'forged',
      'x-forwarded-for': '203.0.113.9',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': 'evil.example',
      'x-request-id': 'chosen-by-the-client',
      'x-real-ip': '203.0.113.9',
      forwarded: 'for=203.0.113.9',
      X_AOG_Agent: 'forged',
      X_Forwarded_For: '6.6.6.6',
      'X-Forwarded-Port': '1',
      'X-Forwarded-Prefix': '/evil',
      'X-Forwarded-Server': 'evil.example',
      X_Real_IP: '6.6.6.6',
      Keep_Alive: 'timeout=5',
      'x-custom': 'kept',
      'x-aogless': 'kept too',
      cookie: 'a=1; b=2',
      'content-type': 'text/plain',
    },
    body: Buffer.from('hello'),
  })
  t.equal(reply.status, 200)
  const echo = json(reply) as Echo
  t.equal(echo.method, 'POST')
  t.equal(echo.url, '/base/a/b%20c/?x=1&y=%2F&x=2', 'prefix without its trailing slash, then the target byte for byte')
  t.equal(echo.headers.host, `127.0.0.1:${r.upPort}`, 'Host is the upstream URL host')
  t.equal(echo.headers['x-forwarded-host'], 'gate.example:8443', 'the client Host goes in X-Forwarded-Host')
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is set, not appended to')
  t.equal(echo.headers['x-real-ip'], '127.0.0.1', 'X-Real-IP is set to the client address, not the client\'s own')
  t.equal(echo.headers['x-forwarded-proto'], 'https')
  t.equal(echo.headers['x-aog-agent'], ASSERTION, 'only the gate assertion')
  t.equal(echo.headers['x-request-id'], reply.headers['x-request-id'], 'the upstream gets the gate\'s request id, the one the client is answered with')
  t.not(echo.headers['x-request-id'], 'chosen-by-the-client', 'not the client\'s own')
  const names = echo.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  for (const gone of ['x-hop', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'proxy-authorization', 'x-aog-fingerprint', 'x-aog-anything', 'forwarded', 'transfer-encoding', 'expect',
    'x_aog_agent', 'x_forwarded_for', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server', 'x_real_ip', 'keep_alive']) {
    t.notOk(names.includes(gone), `${gone} is not forwarded`)
  }
  t.equal(names.filter((n) => n === 'x-aog-agent').length, 1)
  t.equal(names.filter((n) => n === 'host').length, 1)
  t.not(echo.headers.connection, 'keep-alive, X-Hop', 'the client Connection header is not forwarded')
  t.equal(echo.headers['x-custom'], 'kept')
  t.equal(echo.headers['x-aogless'], 'kept too')
  t.equal(echo.headers.cookie, 'a=1; b=2')
  t.equal(echo.headers['content-length'], '5')
  t.equal(echo.sha256, createHash('sha256').update('hello').digest('hex'))

  // Without a prefix the target is unchanged; a prefix without a trailing slash works the same.
  const plain = await rig(t)
  t.equal((json(await call(plain.port, '/p?q=%20')) as Echo).url, '/p?q=%20')
  const bare = await rig(t, { prefix: '/v1' })
  t.equal((json(await call(bare.port, '/')) as Echo).url, '/v1/')
})

t.test('a chunked request body is forwarded chunked and intact', async (t) => {
  const r = await rig(t)
  const parts = [Buffer.from('one,'), Buffer.from('two,'), Buffer.from('three')]
  // Paced, so the body is still coming when the request goes upstream (undici sends a Content-Length
  // for a body that has already ended).
  async function * paced (): AsyncGenerator<Buffer> { for (const p of parts) { yield p; await sleep(20) } }
  const echo = json(await call(r.port, '/chunked', { method: 'PUT', body: Readable.from(paced()) })) as Echo
  t.equal(echo.headers['transfer-encoding'], 'chunked')
  t.equal(echo.headers['content-length'], undefined)
  t.equal(echo.sha256, createHash('sha256').update(Buffer.concat(parts)).digest('hex'))
})

t.test('the upstream answer passes through: status, reason, headers, several Set-Cookie, body; hop-by-hop headers dropped', async (t) => {
  const r = await rig(t)
  const a = await call(r.port, '/x?do=cookies')
  t.equal(a.status, 201)
  t.equal(a.statusMessage, 'Made It')
  t.same(a.headers['set-cookie'], ['a=1; Path=/', 'b=2; HttpOnly'])
  const names = a.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  t.equal(names.filter((n) => n === 'x-kept').length, 2, 'repeated headers stay repeated')
  for (const gone of ['x-up-hop', 'keep-alive', 'proxy-authenticate', 'proxy-connection', 'trailer']) t.notOk(names.includes(gone), `${gone} is dropped`)
  t.equal(a.body.toString(), 'chunk one,chunk two')

  const e = await call(r.port, '/x?do=status&code=500')
  t.equal(e.status, 500, "the upstream's 500 is passed on as it is")
  t.equal(e.headers['x-up'], 'yes')
  t.equal(e.headers['content-type'], 'text/plain')
  t.equal(e.body.toString(), 'boom')
  t.same(r.errors, [], 'no gate error')

  const head = await call(r.port, '/x?do=status&code=200', { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], '4', 'HEAD keeps the length of what GET would send')
  t.equal(head.body.length, 0)
  for (const code of [204, 304]) {
    const n = await call(r.port, `/x?do=status&code=${code}`)
    t.equal(n.status, code)
    t.equal(n.body.length, 0, `${code} has no body`)
    t.equal(n.headers['x-up'], 'yes')
  }
  await until(() => r.results.length === 5)
  t.same(r.results.map((x) => x.status), [201, 500, 200, 204, 304], 'forward resolves with the upstream status')
  t.ok(r.results.every((x) => x.cut === undefined), 'every response written in full')
})

t.test('connections to the upstream are kept alive and reused', async (t) => {
  const r = await rig(t, { connections: 4 })
  for (let i = 0; i < 40; i++) t.equal((await call(r.port, `/seq${i}`)).status, 200)
  t.equal(r.up.connections, 1, '40 sequential requests over one connection')
  const replies = await Promise.all(Array.from({ length: 60 }, async (_, i) => call(r.port, `/par${i}`)))
  t.ok(replies.every((x) => x.status === 200))
  t.ok(r.up.connections <= 4, `60 concurrent requests over at most 4 connections (${r.up.connections})`)
  t.equal(r.up.requests, 100)
  const s = r.upstream.stats()
  t.same(Object.keys(s).sort(), ['connected', 'free', 'pending', 'running', 'size'])
  t.ok(s.connected >= 1 && s.connected <= 4)
  t.equal(s.free, s.connected, 'every connection idle')
  t.equal(s.running, 0)
  t.equal(s.pending, 0)
})

t.test('an unreachable upstream is 502, a reset is 502, a closed pool is 502', async (t) => {
  const probe = http.createServer()
  probe.listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const closedPort = (probe.address() as AddressInfo).port
  await new Promise((resolve) => probe.close(resolve))
  const r = await rig(t)
  const dead = new Upstream({ url: `http://127.0.0.1:${closedPort}`, maxBodyBytes: MiB, timeoutMs: 2000, connections: 2 })
  t.teardown(async () => { await dead.close() })
  const front = http.createServer((req, res) => {
    dead.forward(req, res, { clientIp: '127.0.0.1', proto: 'https', host: 'h' }).catch((err: AogError) => {
      res.writeHead(err.status, { 'x-code': err.code, 'x-cause': String((err.cause as { code?: string }).code) }).end()
    })
  })
  front.listen(0, '127.0.0.1')
  await once(front, 'listening')
  t.teardown(() => { front.close() })
  const a = await call((front.address() as AddressInfo).port, '/', { method: 'POST', body: Buffer.from('x') })
  t.equal(a.status, 502)
  t.equal(a.headers['x-code'], 'AOG_UPSTREAM_UNAVAILABLE')
  t.equal(a.headers['x-cause'], 'ECONNREFUSED')

  const b = await call(r.port, '/x?do=reset')
  t.equal(b.status, 502)
  t.equal(json(b).code, 'AOG_UPSTREAM_UNAVAILABLE')

  const closing = await rig(t)
  await closing.upstream.close()
  const c = await call(closing.port, '/')
  t.equal(c.status, 502)
  t.equal(json(c).code, 'AOG_UPSTREAM_UNAVAILABLE')
})

t.test('Upgrade requests and targets that are not a path are refused with 400, before the upstream', async (t) => {
  const r = await rig(t)
  const a = await call(r.port, '/ws', { headers: { connection: 'Upgrade', upgrade: 'websocket' } })
  t.equal(a.status, 400)
  t.equal(json(a).code, 'AOG_BAD_REQUEST')
  const b = await call(r.port, 'http://elsewhere.example/x')
  t.equal(b.status, 400)
  t.equal(json(b).code, 'AOG_BAD_REQUEST')
  t.equal(r.up.requests, 0)
})

t.test('a target whose path has a dot-segment is refused with 400, before the upstream; dots in names pass', async (t) => {
  const r = await rig(t, { prefix: '/base' })
  for (const target of ['/x/../../admin', '/..', '/.', '/x/./y', '/%2e%2e/admin', '/%2E%2e/admin', '/x/.%2e', '/x/%2E/', '/x/..%2Fadmin', '/x/..%5cadmin', '/x/..;/admin']) {
    const a = await call(r.port, target)
    t.equal(a.status, 400, target)
    t.equal(json(a).code, 'AOG_BAD_REQUEST')
  }
  t.equal(r.up.requests, 0, 'none reached the upstream')
  for (const target of ['/a.b/c..d/.well-known/x', '/...', '/x/.%2e%2e', '/q?x=/../y']) {
    t.equal((json(await call(r.port, target)) as Echo).url, '/base' + target, `${target} proxied as it is`)
  }
})

t.test('an upstream silent before its headers is 504; one silent within its body has the client connection cut', async (t) => {
  const r = await rig(t, { timeoutMs: 300 })
  const start = performance.now()
  const a = await call(r.port, '/x?do=stall')
  const took = performance.now() - start
  t.equal(a.status, 504)
  t.equal(json(a).code, 'AOG_UPSTREAM_TIMEOUT')
  t.ok(took >= 290 && took < 3000, `answered after the timeout (${Math.round(took)} ms)`)
  t.equal(await r.up.closed[0], true, 'the stalled upstream request was closed')

  const req = http.request({ host: '127.0.0.1', port: r.port, path: '/x?do=slowbody', agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  t.equal(res.statusCode, 200)
  const chunks: Buffer[] = []
  res.on('data', (c: Buffer) => chunks.push(c))
  const [err] = await once(res, 'error') as [NodeJS.ErrnoException]
  t.equal(err.code, 'ECONNRESET', 'the client connection is cut, not ended')
  t.equal(Buffer.concat(chunks).toString(), 'part of it')
  await until(() => r.results.length === 1)
  t.equal(r.results[0]!.status, 200)
  t.equal(r.results[0]!.cut?.reason, 'upstream_timeout')
})

t.test('an https upstream that never completes its handshake is 504', async (t) => {
  // A TCP listener that accepts and says nothing: the TLS handshake stalls.
  const sockets = new Set<Socket>()
  const mute = createServer((s) => { sockets.add(s) })
  mute.listen(0, '127.0.0.1')
  await once(mute, 'listening')
  t.teardown(() => { for (const s of sockets) s.destroy(); mute.close() })
  const stuck = new Upstream({ url: `https://127.0.0.1:${(mute.address() as AddressInfo).port}`, ca: pem('ca.pem'), maxBodyBytes: MiB, timeoutMs: 300, connections: 1 })
  t.teardown(async () => { await stuck.close() })
  const front = http.createServer((req, res) => {
    stuck.forward(req, res, { clientIp: '127.0.0.1', proto: 'https', host: 'h' }).catch((err: AogError) => {
      res.writeHead(err.status, { 'x-code': err.code }).end()
    })
  })
  front.listen(0, '127.0.0.1')
  await once(front, 'listening')
  t.teardown(() => { front.close() })
  const start = performance.now()
  const a = await call((front.address() as AddressInfo).port, '/')
  t.equal(a.status, 504)
  t.equal(a.headers['x-code'], 'AOG_UPSTREAM_TIMEOUT')
  t.ok(performance.now() - start < 3000)
  t.equal(sockets.size, 1, 'the connection was made, the handshake never finished')
})

t.test('the wait for headers does not count time spent waiting on a slow client upload', async (t) => {
  const r = await rig(t, { timeoutMs: 200 })
  async function * slow (): AsyncGenerator<Buffer> {
    for (let i = 0; i < 8; i++) { yield Buffer.from(`part ${i};`); await sleep(100) }
  }
  const start = performance.now()
  const a = await call(r.port, '/slow-upload', { method: 'POST', body: Readable.from(slow()) })
  t.ok(performance.now() - start > 600, 'the upload took several timeouts')
  t.equal(a.status, 200)
  t.equal((json(a) as Echo).bytes, 8 * 7)
})

t.test('an upstream that stops reading the request body is 504', async (t) => {
  const r = await rig(t, { timeoutMs: 300 })
  let sent = 0
  const body = Readable.from((function * () {
    for (const b of blocks(256 * MiB, Buffer.alloc(64 * 1024, 1))) { sent += b.length; yield b }
  })())
  const a = await call(r.port, '/x?do=hangread', { method: 'POST', body })
  body.destroy()
  t.equal(a.status, 504)
  t.equal(json(a).code, 'AOG_UPSTREAM_TIMEOUT')
  t.ok(sent < 256 * MiB, `the upload stalled (${(sent / MiB).toFixed(1)} MiB sent)`)
  t.equal(a.headers.connection, 'close', 'the unread rest of the body closes the client connection')
})

t.test('a request waiting for a pool connection gets its 504 at the timeout and is never sent; the wait is bounded (503)', async (t) => {
  const r = await rig(t, { connections: 1, timeoutMs: 400 })
  // The one connection held by a body that never pauses long enough to time out.
  const holder = http.request({ host: '127.0.0.1', port: r.port, path: '/x?do=trickle', agent: false })
  holder.on('error', () => {})
  holder.end()
  const [held] = await once(holder, 'response') as [IncomingMessage]
  held.resume()
  // 1 connection: 4 requests may wait for it; a fifth is refused at once.
  const start = performance.now()
  const waiting = Array.from({ length: 4 }, async (_, i) => call(r.port, `/wait${i}`))
  await until(() => r.upstream.stats().pending === 4, 2000)
  const t0 = performance.now()
  const full = await call(r.port, '/full')
  t.equal(full.status, 503)
  t.equal(json(full).code, 'AOG_OVERLOADED')
  t.ok(performance.now() - t0 < 300, 'at once')
  t.equal((r.errors.at(-1) as AogError).retryAfter, 1, 'with Retry-After')
  const answers = await Promise.all(waiting)
  const took = performance.now() - start
  t.same(answers.map((a) => a.status), [504, 504, 504, 504], 'each waiting request: 504')
  t.ok(answers.every((a) => json(a).code === 'AOG_UPSTREAM_TIMEOUT'))
  t.ok(took >= 390 && took < 2000, `answered at the timeout while waiting for a connection (${Math.round(took)} ms)`)
  // Answered, they still count until undici drops them: the next request is refused too.
  t.equal(r.upstream.stats().pending, 4, 'undici still holds them')
  t.equal((await call(r.port, '/still-full')).status, 503)
  held.destroy()
  holder.destroy()
  // The connection freed: the requests answered 504 are dropped unsent, a new one goes through.
  await until(() => r.upstream.stats().pending === 0, 2000)
  t.equal((await call(r.port, '/after')).status, 200)
  t.equal(r.up.requests, 2, 'the upstream saw the trickle and /after only')
})

t.test('a client that does not read the response for the timeout has the exchange cut; one that reads now and then does not', async (t) => {
  const r = await rig(t, { timeoutMs: 600 })
  const socket = createConnection({ host: '127.0.0.1', port: r.port })
  socket.on('error', () => {})
  t.teardown(() => { socket.destroy() })
  socket.write(`GET /x?do=download&bytes=${1024 * MiB} HTTP/1.1\r\nhost: x\r\n\r\n`)
  socket.pause()
  await until(() => r.results.length === 1, 15_000)
  t.equal(r.results[0]!.status, 200)
  t.equal(r.results[0]!.cut?.reason, 'client_stalled')
  t.equal(await r.up.closed[0], true, 'the upstream response was closed before its end')
  await until(() => r.upstream.stats().running === 0, 2000)
  // Its connection was dropped, not kept: read what the kernel held, then the end.
  socket.resume()
  let got = 0
  socket.on('data', (c: Buffer) => { got += c.length })
  await new Promise((resolve) => socket.once('close', resolve))
  t.ok(got < 512 * MiB, `the client connection was closed (${(got / MiB).toFixed(1)} MiB read)`)

  // Pauses of 300 ms, half the timeout: the whole body arrives.
  const req = http.request({ host: '127.0.0.1', port: r.port, path: `/x?do=download&bytes=${48 * MiB}`, agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  let bytes = 0
  let pauses = 0
  res.on('data', (c: Buffer) => {
    bytes += c.length
    if (bytes > (pauses + 1) * 4 * MiB) {
      pauses++
      res.pause()
      setTimeout(() => res.resume(), 300)
    }
  })
  await once(res, 'end')
  t.equal(bytes, 48 * MiB, `the whole body, after ${pauses} pauses`)
  await until(() => r.results.length === 2, 2000)
  t.equal(r.results[1]!.cut, undefined)
})

t.test('a body over maxBodyBytes is 413: by Content-Length before connecting, or once a chunked body grows past it', async (t) => {
  const r = await rig(t, { maxBodyBytes: MiB })
  const req = http.request({ host: '127.0.0.1', port: r.port, path: '/big', method: 'POST', headers: { 'content-length': String(2 * MiB) }, agent: false })
  req.on('error', () => {})
  req.flushHeaders()
  const [res] = await once(req, 'response') as [IncomingMessage]
  res.resume()
  req.destroy()
  t.equal(res.statusCode, 413)
  t.equal(res.headers.connection, 'close')
  t.equal(r.up.connections, 0, 'the upstream was not contacted')

  const exact = await call(r.port, '/exact', { method: 'POST', body: Buffer.alloc(MiB, 7) })
  t.equal(exact.status, 200, 'exactly the limit passes')
  t.equal((json(exact) as Echo).bytes, MiB)

  const chunked = await call(r.port, '/grow', { method: 'POST', body: Readable.from(blocks(4 * MiB, Buffer.alloc(16 * 1024, 2))) })
  t.equal(chunked.status, 413)
  t.equal(json(chunked).code, 'AOG_BODY_TOO_LARGE')
  t.equal(chunked.headers.connection, 'close')
  t.equal(await r.up.closed[1], true, 'the upstream request was aborted')

  // Once the upstream has answered, growing past the limit cuts the exchange.
  const req2 = http.request({ host: '127.0.0.1', port: r.port, path: '/x?do=early', method: 'POST', agent: false })
  req2.on('error', () => {})
  const answered = once(req2, 'response') as Promise<[IncomingMessage]>
  // The rest of the body only once the upstream has answered.
  async function * late (): AsyncGenerator<Buffer> {
    yield Buffer.alloc(64 * 1024, 3)
    await answered
    yield * blocks(4 * MiB, Buffer.alloc(16 * 1024, 3))
  }
  pipeline(Readable.from(late()), req2).catch(() => {})
  const [res2] = await answered
  t.equal(res2.statusCode, 200)
  let got = 0
  res2.on('data', (c: Buffer) => { got += c.length })
  res2.on('error', () => {})
  await new Promise((resolve) => res2.once('close', resolve))
  t.notOk(res2.complete, 'the response was cut')
  t.ok(got <= MiB, `no more than the limit came back (${got} bytes)`)
  await until(() => r.results.length === 2)
  t.equal(r.results[1]!.cut?.reason, 'body_too_large')
  t.equal(await r.up.closed[2], true, 'the upstream request was aborted')
})

t.test('50 MiB up and 50 MiB down are streamed intact, with flat memory', async (t) => {
  const r = await rig(t)
  const size = 50 * MiB
  const block = randomBytes(64 * 1024)
  // Warm up: the same paths once with a small body, so lazily allocated buffers are in the baseline.
  await call(r.port, '/warm', { method: 'POST', body: Readable.from(blocks(4 * MiB, block)) })
  await call(r.port, `/x?do=download&bytes=${4 * MiB}`)

  const upHash = createHash('sha256')
  let echo: Echo | undefined
  const up = await liveGrowth(async () => {
    const body = Readable.from((function * () { for (const b of blocks(size, block)) { upHash.update(b); yield b } })())
    echo = json(await call(r.port, '/upload', { method: 'POST', headers: { 'content-length': String(size) }, body })) as Echo
  })
  t.equal(echo?.bytes, size)
  t.equal(echo?.sha256, upHash.digest('hex'), 'the upload arrived intact')

  const downHash = createHash('sha256')
  let got = 0
  const down = await liveGrowth(async () => {
    const req = http.request({ host: '127.0.0.1', port: r.port, path: `/x?do=download&bytes=${size}`, agent: false })
    req.end()
    const [res] = await once(req, 'response') as [IncomingMessage]
    for await (const c of res) { downHash.update(c as Buffer); got += (c as Buffer).length }
  })
  t.equal(got, size)
  t.equal(downHash.digest('hex'), r.up.sent.at(-1), 'the download arrived intact')
  const upMiB = (up.peak - up.base) / MiB
  const downMiB = (down.peak - down.base) / MiB
  // A body held whole (by the relay, or by this process's client or upstream) would be 50 MiB live at once.
  t.comment(`live memory: upload base ${(up.base / MiB).toFixed(1)} MiB, growth ${upMiB.toFixed(1)} MiB; download base ${(down.base / MiB).toFixed(1)} MiB, growth ${downMiB.toFixed(1)} MiB`)
  t.ok(upMiB < 25, `upload: live memory growth ${upMiB.toFixed(1)} MiB < 25 MiB, half a body`)
  t.ok(downMiB < 25, `download: live memory growth ${downMiB.toFixed(1)} MiB < 25 MiB, half a body`)
})

t.test('a client that leaves aborts the upstream request: mid-download, before the answer, mid-upload', async (t) => {
  const r = await rig(t, { connections: 2 })
  const req = http.request({ host: '127.0.0.1', port: r.port, path: `/x?do=download&bytes=${1024 * MiB}`, agent: false })
  req.end()
  const [res] = await once(req, 'response') as [IncomingMessage]
  let got = 0
  for await (const c of res) {
    got += (c as Buffer).length
    if (got > MiB) break
  }
  req.destroy()
  t.equal(await r.up.closed[0], true, 'the upstream saw its response closed before its end')
  await until(() => r.results.length === 1)
  t.equal(r.results[0]!.status, 200)
  t.equal(r.results[0]!.cut?.reason, 'client_closed')

  const stalled = http.request({ host: '127.0.0.1', port: r.port, path: '/x?do=stall', agent: false })
  stalled.on('error', () => {})
  stalled.end()
  await until(() => r.up.requests === 2)
  stalled.destroy()
  t.equal(await r.up.closed[1], true, 'the upstream saw the waiting request closed')
  await until(() => r.results.length === 2)
  t.equal(r.results[1]!.status, 499)
  t.equal(r.results[1]!.cut?.reason, 'client_closed')

  // Mid-upload: the upstream, still reading the body, sees its request end early.
  const upload = http.request({ host: '127.0.0.1', port: r.port, path: '/upload', method: 'POST', agent: false })
  upload.on('error', () => {})
  upload.write(Buffer.alloc(256 * 1024, 4))
  await until(() => r.up.requests === 3)
  upload.destroy()
  t.equal(await r.up.closed[2], true, 'the upstream saw the upload cut')
  await until(() => r.results.length === 3)
  t.equal(r.results[2]!.status, 499)
  t.equal(r.results[2]!.cut?.reason, 'client_closed')
  t.same(r.errors, [])
  await until(() => r.upstream.stats().running === 0)
  t.equal(r.upstream.stats().pending, 0, 'nothing left in the pool')
})

t.test('an https upstream is verified against the given CA', async (t) => {
  const ca = pem('ca.pem')
  for (const host of ['localhost', '127.0.0.1']) {
    const r = await rig(t, { tls: true, ca, host })
    const a = await call(r.port, '/secure?x=1', { method: 'POST', body: Buffer.from('over tls') })
    t.equal(a.status, 200, `${host}: verified`)
    const echo = json(a) as Echo
    t.equal(echo.headers.host, `${host}:${r.upPort}`)
    t.equal(echo.url, '/secure?x=1')
    t.equal(echo.sha256, createHash('sha256').update('over tls').digest('hex'))
  }
  const untrusted = await rig(t, { tls: true, host: 'localhost' })
  const b = await call(untrusted.port, '/secure')
  t.equal(b.status, 502, 'without the CA the certificate is refused')
  t.equal(json(b).code, 'AOG_UPSTREAM_UNAVAILABLE')
  const cause = (untrusted.errors[0] as AogError).cause as { code?: string }
  t.match(cause.code, /CERT|VERIFY|SELF_SIGNED/, `a TLS verification failure (${cause.code})`)
  t.equal(untrusted.up.requests, 0)
})
