/**
 * nginx auth_request in front of a protected application (docs/protocol.md section 7, forwarded
 * mode): a real nginx with the generated configuration, a real gate in forwarded mode answering
 * GET /auth, a real application, agents of the dev PKI.
 */
import t, { type Test } from 'tap'
import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { connect } from 'node:tls'
import { request, type Dispatcher } from 'undici'
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose'
import { startGate } from '../helpers/gate.js'
import { startNginx, NGINX, type Nginx } from '../helpers/nginx.js'
import { DEV, agentFiles, pem } from '../helpers/pki.js'
import { hasTool, missing } from '../helpers/tools.js'
import { freePort } from '../helpers/redis.js'
import { createAgent, pass, type AogAgent } from '../../lib/client/agent.js'
import { signatureHeader } from '../../lib/identity/forwarded.js'
import { CLEARED_PROXY_HEADERS } from '../../lib/nginx-config.js'

// This file is the only test of the auth_request configuration: without nginx it fails, loudly.
if (!hasTool(NGINX)) throw new Error(missing('nginx', 'nginx libnginx-mod-http-js'))

const SECRET = randomBytes(24).toString('hex')

interface Seen { method: string, url: string, headers: IncomingHttpHeaders, body: string }

/** The protected application: answers every request with what it received, as JSON. */
async function startApp (t: Test): Promise<{ url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => { body += String(d) })
    req.on('end', () => {
      const s = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body }
      seen.push(s)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(s))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

interface Setup {
  g: Awaited<ReturnType<typeof startGate>>
  app: Awaited<ReturnType<typeof startApp>>
  nginx: Nginx
  agent: AogAgent
}

/** Gate (forwarded mode, GET /auth), application, nginx with --protect, and an agent through nginx. */
async function setup (t: Test, over: Record<string, unknown> = {}, nginxOver: { morePorts?: number[], prefix?: string } = {}): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'aog-auth-'))
  writeFileSync(join(dir, 'secret'), `${SECRET}\n`)
  const g = await startGate(t, {
    mode: 'forwarded',
    forwardSecretFile: join(dir, 'secret'),
    assertionKey: join(DEV, 'assertion-key.pem'),
    ...over,
  }, { watchMs: 50 })
  const app = await startApp(t)
  const nginx = await startNginx({ upstreamPort: Number(new URL(g.url).port), secretFile: join(dir, 'secret'), protect: app.url + (nginxOver.prefix ?? ''), ...(nginxOver.morePorts === undefined ? {} : { morePorts: nginxOver.morePorts }) })
  t.teardown(() => nginx.stop())
  const agent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  return { g, app, nginx, agent }
}

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, text: string, json: any }

async function send (dispatcher: Dispatcher, url: string, opts: Partial<Dispatcher.RequestOptions> = {}): Promise<Answer> {
  const res = await request(url, { dispatcher, ...opts } as Dispatcher.RequestOptions)
  const text = await res.body.text()
  let json: any
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.statusCode, headers: res.headers, text, json }
}

/** A problem+json answer with the given status and code (the shape lib/http/reply.ts sends). */
function isProblem (t: Test, a: Answer, status: number, code: string, name: string): void {
  t.equal(a.status, status, `${name}: status ${status}`)
  t.equal(a.headers['content-type'], 'application/problem+json', `${name}: problem+json, not nginx's HTML`)
  t.match(a.json, { type: `urn:aog:problem:${code.toLowerCase().replaceAll('_', '-')}`, title: String, status, detail: String, code }, `${name}: ${code}`)
}

/** `bytes` written as they are to nginx over the agent's mTLS (no URL normalisation), the answer read until nginx closes. */
async function rawTls (port: number, bytes: string): Promise<{ status: number, head: string, body: string }> {
  const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...agentFiles('agent') })
  let text = ''
  socket.on('data', (d: Buffer) => { text += d.toString('latin1') })
  socket.on('error', () => {})
  socket.write(bytes)
  const limit = setTimeout(() => { socket.destroy() }, 10_000)
  await new Promise((resolve) => socket.once('close', resolve))
  clearTimeout(limit)
  const end = text.indexOf('\r\n\r\n')
  return { status: Number(text.slice(9, 12)), head: text.slice(0, end), body: text.slice(end + 4) }
}

/** X-AOG-Agent verified against the gate's JWKS. */
async function assertion (g: Setup['g'], token: unknown): Promise<JWTPayload> {
  if (typeof token !== 'string') throw new Error(`no X-AOG-Agent: ${String(token)}`)
  const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${g.opsUrl}/.well-known/jwks.json`)))
  return payload
}

t.test('before a pass: 401 AOG_GRANT_REQUIRED with the way in; without a certificate: 401 AOG_IDENTITY_REQUIRED', async (t) => {
  const { nginx, agent, app } = await setup(t)
  const a = await send(agent.dispatcher, `${nginx.url}/a`)
  isProblem(t, a, 401, 'AOG_GRANT_REQUIRED', 'no grant')
  t.equal(a.headers['www-authenticate'], 'AOG challenge="/challenge"', 'WWW-Authenticate, once')
  t.equal(a.headers.link, '</challenge>; rel="https://aog.dev/rel/challenge"')
  t.equal(a.headers['cache-control'], 'no-store')
  const { Agent } = await import('undici')
  const bare = new Agent({ connect: { ca: pem('ca.pem') } })
  t.teardown(() => bare.close())
  isProblem(t, await send(bare, `${nginx.url}/a`), 401, 'AOG_IDENTITY_REQUIRED', 'no certificate')
  t.equal(app.seen.length, 0, 'the application saw nothing')
})

t.test('after a pass: the application answers, with a valid X-AOG-Agent for the original request and no client-sent identity headers', async (t) => {
  const { g, nginx, agent, app } = await setup(t)
  t.equal((await pass(agent)).status, 'accepted', 'the pass goes through nginx to the gate')
  const forged = {
    'x-aog-client-cert': encodeURIComponent(pem('agent2.pem').toString()),
    'x-aog-client-verify': 'SUCCESS',
    'x-aog-signature': `t=${Math.floor(Date.now() / 1000)},rid=${'1'.repeat(32)},v1=${'0'.repeat(64)}`,
    'x-aog-agent': 'forged.assertion.value',
    'x-aog-foo': 'forged',
    'x-original-uri': '/elsewhere',
    'x-forwarded-for': '203.0.113.9',
  }
  const target = '/a/b?x=1&y=%2F'
  const a = await send(agent.dispatcher, nginx.url + target, { headers: forged })
  t.equal(a.status, 200, 'the application answered')
  const seen = a.json as Seen
  t.equal(seen.method, 'GET')
  t.equal(seen.url, target, 'the request target reaches the application as sent')
  t.match(seen.headers, { host: new URL(app.url).host, 'x-forwarded-host': `localhost:${nginx.port}`, 'x-forwarded-proto': 'https', 'x-forwarded-for': '127.0.0.1' },
    'Host and X-Forwarded-* as the gate sets them in direct mode')
  const claims = await assertion(g, seen.headers['x-aog-agent'])
  t.match(claims, { sub: agent.fingerprint, htm: 'GET', htu: target }, 'X-AOG-Agent: the agent\'s identity and the original method and target')
  t.ok(typeof claims.exp === 'number' && typeof claims.iat === 'number' && claims.exp - claims.iat <= 60, 'short-lived')
  for (const h of ['x-aog-client-cert', 'x-aog-client-verify', 'x-aog-signature', 'x-original-uri']) t.equal(seen.headers[h], undefined, `no ${h}`)
  // nginx cannot drop a header family by prefix: an unknown X-AOG-* name arrives as the client sent
  // it, and the application trusts nothing but the X-AOG-Agent it verified.
  t.equal(seen.headers['x-aog-foo'], 'forged', 'an unknown X-AOG-* name passes, untrusted (documented)')

  const body = JSON.stringify({ order: 42, note: 'x'.repeat(100_000) })
  const p = await send(agent.dispatcher, `${nginx.url}/orders?draft=0`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  t.equal(p.status, 200)
  t.equal((p.json as Seen).method, 'POST')
  t.equal((p.json as Seen).body, body, 'the request body reaches the application whole')
  t.match(await assertion(g, (p.json as Seen).headers['x-aog-agent']), { htm: 'POST', htu: '/orders?draft=0' })
  t.equal(app.seen.length, 2)
})

t.test('the upstream bucket: 429 AOG_RATE_LIMITED with Retry-After', async (t) => {
  const { nginx, agent } = await setup(t, { upstreamRateBurst: 2, upstreamRatePerSecond: 0.01 })
  await pass(agent)
  t.equal((await send(agent.dispatcher, `${nginx.url}/1`)).status, 200)
  t.equal((await send(agent.dispatcher, `${nginx.url}/2`)).status, 200)
  const a = await send(agent.dispatcher, `${nginx.url}/3`)
  isProblem(t, a, 429, 'AOG_RATE_LIMITED', 'third request')
  t.ok(Number(a.headers['retry-after']) >= 1, `Retry-After ${String(a.headers['retry-after'])}`)
  t.match(a.headers, { ratelimit: /^"identity";r=0;t=\d+$/, 'ratelimit-policy': /^"identity";q=2;w=\d+$/ }, 'the RateLimit headers, as in direct mode')
})

t.test('revoked by the deny list while granted: 403 AOG_NOT_AUTHORIZED', async (t) => {
  const deny = join(mkdtempSync(join(tmpdir(), 'aog-deny-')), 'deny')
  writeFileSync(deny, '')
  const { g, nginx, agent } = await setup(t, { denyFile: deny })
  await pass(agent)
  t.equal((await send(agent.dispatcher, `${nginx.url}/x`)).status, 200)
  appendFileSync(deny, `${agent.fingerprint}\n`)
  g.gate.reload()
  isProblem(t, await send(agent.dispatcher, `${nginx.url}/x`), 403, 'AOG_NOT_AUTHORIZED', 'revoked')
})

t.test('no gate answering: 503 AOG_UNAVAILABLE problem+json with Retry-After, not nginx\'s 500 page', async (t) => {
  const { g, nginx, agent, app } = await setup(t)
  await pass(agent)
  t.equal((await send(agent.dispatcher, `${nginx.url}/x`)).status, 200)
  await g.gate.close()
  const a = await send(agent.dispatcher, `${nginx.url}/x`)
  isProblem(t, a, 503, 'AOG_UNAVAILABLE', 'gate stopped')
  t.equal(a.headers['retry-after'], '1')
  t.equal(app.seen.length, 1, 'fail closed: the application saw only the allowed request')
})

t.test('two gate instances, one of them down: every request is served by the other', async (t) => {
  const down = await freePort()
  const { nginx, agent } = await setup(t, {}, { morePorts: [down] })
  t.equal((await pass(agent)).status, 'accepted')
  for (let i = 0; i < 4; i++) t.equal((await send(agent.dispatcher, `${nginx.url}/r${i}`)).status, 200, `request ${i}`)
})

t.test('straight at GET /auth: the signature binds the original method and target, and a request id counts once', async (t) => {
  const { g, agent } = await setup(t)
  await pass(agent) // through nginx: the grant belongs to the agent's identity
  const url = `${g.url.replace('https:', 'http:')}/auth`
  const cert = encodeURIComponent(pem('agent.pem').toString())
  const signed = (method: string, target: string): Record<string, string> => {
    const s = { t: Math.floor(Date.now() / 1000), rid: randomBytes(16).toString('hex'), method, target, verify: 'SUCCESS', cert }
    return { 'x-aog-client-cert': cert, 'x-aog-client-verify': 'SUCCESS', 'x-aog-signature': signatureHeader(SECRET, s) }
  }
  const { Agent } = await import('undici')
  const plain = new Agent()
  t.teardown(() => plain.close())
  const auth = async (headers: Record<string, string>, method: string, uri: string): Promise<Answer> =>
    await send(plain, url, { headers: { ...headers, 'x-original-method': method, 'x-original-uri': uri } })

  const forA = signed('GET', '/a')
  const moved = await auth(forA, 'GET', '/b')
  t.equal(moved.status, 401, 'a signature made for /a does not authorize /b')
  t.equal(moved.headers['x-aog-code'], 'AOG_IDENTITY_REQUIRED')
  t.equal(moved.headers['x-aog-status'], '401')
  t.equal((await auth(signed('GET', '/a'), 'POST', '/a')).status, 401, 'nor another method')
  t.equal((await auth(signed('GET', '/auth'), 'GET', '/a')).status, 401, 'nor does a signature over /auth itself')

  const ok = signed('GET', '/a?q=1')
  const first = await auth(ok, 'GET', '/a?q=1')
  t.equal(first.status, 204, 'signed for the original request: allowed')
  t.match(await assertion(g, first.headers['x-aog-agent']), { sub: agent.fingerprint, htm: 'GET', htu: '/a?q=1' })
  const again = await auth(ok, 'GET', '/a?q=1')
  t.equal(again.status, 401, 'the same header set again: the request id was used')
  t.equal(again.headers['x-aog-code'], 'AOG_IDENTITY_REQUIRED')

  const bare = await send(plain, url, { headers: signed('GET', '/a') })
  t.equal(bare.status, 403, 'forwarded mode: no X-Original-URI/-Method is a refusal')
  t.equal(bare.headers['x-aog-code'], 'AOG_BAD_REQUEST')
  t.equal(bare.headers['x-aog-status'], '400')
})

t.test('the gate\'s own locations pass no client-sent original method or target: /auth/../challenge through nginx is a 400, no X-AOG-Agent, no grant spent', async (t) => {
  const { nginx, agent, app } = await setup(t, { grantMaxRequests: 2 })
  await pass(agent)
  // nginx picks `location = /challenge` (or `^~ /.well-known/aog/`) by the normalised path and
  // passes the raw target: the gate must not answer it as an authorization (Envoy's /auth/ form).
  for (const [target, method] of [['/auth/../challenge', 'GET'], ['/auth/x/../../.well-known/aog/z', 'GET'], ['/auth/%2e%2e/task', 'DELETE'], ['/auth/../task', 'POST']]) {
    const a = await rawTls(nginx.port, `${method} ${target} HTTP/1.1\r\nHost: localhost\r\nX-Original-Method: GET\r\nX-Original-URI: ${target}\r\n` +
      `X-Forwarded-Method: GET\r\nX-Forwarded-Uri: ${target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    t.equal(a.status, 400, `${method} ${target}: 400`)
    t.match(a.body, /"code":"AOG_BAD_REQUEST"/, `${method} ${target}: AOG_BAD_REQUEST`)
    t.notMatch(a.head, /x-aog-agent/i, `${method} ${target}: no X-AOG-Agent handed to the agent`)
  }
  t.equal((await send(agent.dispatcher, `${nginx.url}/1`)).status, 200)
  t.equal((await send(agent.dispatcher, `${nginx.url}/2`)).status, 200)
  isProblem(t, await send(agent.dispatcher, `${nginx.url}/3`), 401, 'AOG_GRANT_REQUIRED', 'the grant\'s 2 requests were left for the application')
  t.equal(app.seen.length, 2)
})

t.test('the gate\'s own locations clear a client\'s X-Original-Method/-URI and X-Forwarded-Method/-Uri (nginx alone, a recorder as the gate)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-auth-'))
  writeFileSync(join(dir, 'secret'), `${SECRET}\n`)
  const gate = await startApp(t)
  const app = await startApp(t)
  const nginx = await startNginx({ upstreamPort: Number(new URL(gate.url).port), secretFile: join(dir, 'secret'), protect: app.url })
  t.teardown(() => nginx.stop())
  const forged = 'X-Original-Method: GET\r\nX-Original-URI: /x\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /x\r\n'
  for (const target of ['/auth/../challenge', '/challenge', '/task', '/.well-known/aog/openapi.json', '/auth/../.well-known/aog/x']) {
    const method = target.endsWith('task') ? 'POST' : 'GET'
    const a = await rawTls(nginx.port, `${method} ${target} HTTP/1.1\r\nHost: localhost\r\n${forged}Content-Length: 0\r\nConnection: close\r\n\r\n`)
    t.equal(a.status, 200, `${target}: reached the recorder`)
    const seen = gate.seen.at(-1)!
    t.equal(seen.url, target, `${target}: passed as the client sent it`)
    for (const h of ['x-original-method', 'x-original-uri', 'x-forwarded-method', 'x-forwarded-uri']) t.equal(seen.headers[h], undefined, `${target}: no ${h}`)
  }
  t.equal(app.seen.length, 0, 'the application saw none of them')
})

t.test('location / clears the client-sent proxy headers it names; other client headers pass, as documented', async (t) => {
  const { nginx, agent } = await setup(t)
  await pass(agent)
  const forged: Record<string, string> = { 'x-forwarded-other': 'kept', 'x-aog-foo': 'kept' }
  for (const h of CLEARED_PROXY_HEADERS) forged[h.toLowerCase()] = 'forged'
  const a = await send(agent.dispatcher, `${nginx.url}/p`, { headers: forged })
  t.equal(a.status, 200)
  const seen = a.json as Seen
  t.same(CLEARED_PROXY_HEADERS.filter((h) => seen.headers[h.toLowerCase()] !== undefined), [], 'none of the cleared names arrives')
  for (const h of ['x-forwarded-prefix', 'x-forwarded-port', 'x-forwarded-server', 'x-forwarded-ssl', 'x-forwarded-scheme', 'x-forwarded-uri',
    'x-forwarded-method', 'x-forwarded-path', 'x-original-host', 'x-original-url', 'x-rewrite-url', 'x-host']) t.equal(seen.headers[h], undefined, `no ${h}`)
  t.equal(seen.headers['x-forwarded-other'], 'kept', 'nginx cannot drop a family by prefix: an unnamed X-Forwarded-* passes (documented)')
})

t.test('with a path on --protect the application gets nginx\'s normalised path while htu is the target as sent (docs/operations.md, verifying X-AOG-Agent)', async (t) => {
  const { g, nginx, agent } = await setup(t, {}, { prefix: '/base' })
  await pass(agent)
  for (const [target, path] of [['/plain?q=1', '/base/plain?q=1'], ['/a//b', '/base/a/b'], ['/a/./b', '/base/a/b'], ['/a/x/../b', '/base/a/b'], ['/%7euser', '/base/~user']]) {
    const a = await rawTls(nginx.port, `GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)
    t.equal(a.status, 200, `${target}: allowed`)
    const seen = JSON.parse(a.body.includes('\r\n') ? a.body.slice(a.body.indexOf('\r\n') + 2, a.body.lastIndexOf('}') + 1) : a.body) as Seen
    t.equal(seen.url, path, `${target}: the application gets ${path}`)
    t.match(await assertion(g, seen.headers['x-aog-agent']), { htu: target }, `${target}: htu is the target as sent`)
  }
})
