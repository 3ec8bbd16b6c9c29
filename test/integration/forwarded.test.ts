/** Forwarded mode behind a real nginx (njs signer), straight at the forwarded listener, and revocation. */
import t, { type Test } from 'tap'
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import type { TLSSocket } from 'node:tls'
import { request } from 'undici'
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { freePort } from '../helpers/redis.js'
import { startGate } from '../helpers/gate.js'
import { startNginx, nginxTest, mainConfig, NGINX } from '../helpers/nginx.js'
import { DEV, ROOT, agentFiles, pem } from '../helpers/pki.js'
import { emptyCrl } from '../helpers/crl.js'
import { hasTool, missing } from '../helpers/tools.js'
import { createAgent, getChallenge, pass, solve, submitTask, certificateFingerprint } from '../../lib/client/agent.js'
import { signatureHeader } from '../../lib/identity/forwarded.js'
import { EXAMPLE, renderNginxConfig } from '../../lib/nginx-config.js'
import type { MemoryStore } from '../../lib/stores/memory.js'
import { outcome, sleep } from '../helpers/outcome.js'

if (!hasTool(NGINX)) {
  t.comment(missing('nginx', 'nginx libnginx-mod-http-js'))
  process.exit(0)
}

const SECRET = randomBytes(24).toString('hex')
const OLD = randomBytes(24).toString('hex')

function secretFiles (): { gate: string, nginx: string } {
  const dir = mkdtempSync(join(tmpdir(), 'aog-fwd-'))
  writeFileSync(join(dir, 'gate'), `${SECRET}\n${OLD}\n`) // the gate accepts both during rotation
  writeFileSync(join(dir, 'nginx'), `${SECRET}\n`)
  return { gate: join(dir, 'gate'), nginx: join(dir, 'nginx') }
}

async function forwardedGate (t: Test, over: Record<string, unknown> = {}): Promise<Awaited<ReturnType<typeof startGate>> & { secrets: ReturnType<typeof secretFiles> }> {
  const secrets = secretFiles()
  const g = await startGate(t, { mode: 'forwarded', forwardSecretFile: secrets.gate, ...over })
  return Object.assign(g, { secrets })
}

t.test('the shipped nginx/aog.conf is the rendered reference and passes nginx -t, with and without --protect', async (t) => {
  const file = readFileSync(join(ROOT, 'nginx/aog.conf'), 'utf8')
  t.equal(file, renderNginxConfig(EXAMPLE), 'nginx/aog.conf = aog-server nginx-config with the example paths')
  t.match(file, /auth_request \/_aog\/auth;/, 'the shipped file fronts the protected application (EXAMPLE.protect)')
  // The shipped file, and the gate-only rendering, their /etc paths pointed at the dev PKI (the only change), then nginx -t.
  for (const [name, text] of [['shipped', file], ['gate only', renderNginxConfig({ ...EXAMPLE, protect: undefined })]] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'aog-nginx-t-'))
    const secret = join(dir, 'secret')
    writeFileSync(secret, SECRET)
    const conf = text
      .replaceAll(EXAMPLE.serverCert, join(DEV, 'server.pem')).replaceAll(EXAMPLE.serverKey, join(DEV, 'server-key.pem'))
      .replaceAll(EXAMPLE.clientCa, join(DEV, 'ca.pem')).replaceAll(EXAMPLE.crl!, join(DEV, 'crl.pem'))
      .replaceAll(EXAMPLE.secretFile, secret).replaceAll(EXAMPLE.jsPath, join(ROOT, 'nginx'))
      .replace('listen 443 ssl', 'listen 127.0.0.1:18443 ssl')
    writeFileSync(join(dir, 'aog.conf'), conf)
    writeFileSync(join(dir, 'nginx.conf'), mainConfig(dir, join(dir, 'aog.conf')))
    t.match(await nginxTest(dir, join(dir, 'nginx.conf')), /syntax is ok[\s\S]*test is successful/, name)
  }
})

t.test('through nginx: an authorized agent passes; no, rogue, expired and revoked certificates are refused', async (t) => {
  const g = await forwardedGate(t)
  const nginx = await startNginx({ upstreamPort: Number(new URL(g.url).port), secretFile: g.secrets.nginx })
  t.teardown(() => nginx.stop())
  const agent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  const r = await pass(agent)
  t.equal(r.status, 'accepted')
  for (const name of ['rogue', 'expired', 'revoked'] as const) {
    const a = createAgent({ url: nginx.url, ...agentFiles(name) })
    t.teardown(() => a.close())
    const o = await outcome(getChallenge(a))
    t.ok(o === '401 AOG_IDENTITY_REQUIRED' || o.startsWith('transport'), `${name}: ${o}`)
  }
  const bare = await new Promise<{ status: number, type: string, body: string }>((resolve, reject) => {
    const req = httpsRequest(`${nginx.url}/challenge`, { ca: pem('ca.pem') }, (res) => {
      let body = ''
      res.on('data', (d) => { body += String(d) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }))
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(bare.status, 401, 'no certificate: 401')
  t.equal(bare.type, 'application/problem+json')
  t.match(JSON.parse(bare.body), { code: 'AOG_IDENTITY_REQUIRED' })
  t.equal((g.gate.store as MemoryStore).size, 1, 'only the authorized agent created a challenge')
})

t.test('through nginx: X-AOG-* headers sent by a client cannot change the identity the gate sees', async (t) => {
  const g = await forwardedGate(t)
  const nginx = await startNginx({ upstreamPort: Number(new URL(g.url).port), secretFile: g.secrets.nginx })
  t.teardown(() => nginx.stop())
  const victim = certificateFingerprint(pem('agent.pem'))
  const forged = {
    'x-aog-client-cert': encodeURIComponent(pem('agent.pem').toString()),
    'x-aog-client-verify': 'SUCCESS',
    'x-aog-signature': `t=${Math.floor(Date.now() / 1000)},rid=${'1'.repeat(32)},v1=${'0'.repeat(64)}`,
  }
  await t.rejects(g.raw('agent2', '/challenge'), 'the forwarded listener speaks plain HTTP: a TLS client gets nothing')
  const attacker = createAgent({ url: nginx.url, ...agentFiles('agent2') })
  t.teardown(() => attacker.close())
  const res = await request(`${nginx.url}/challenge`, { dispatcher: attacker.dispatcher, headers: forged })
  t.equal(res.statusCode, 200)
  const c = await res.body.json() as Parameters<typeof solve>[0]
  t.equal(await outcome(submitTask(attacker, solve(c, attacker.fingerprint))), 'accepted', 'the challenge belongs to the real caller (agent2)')
  const c2 = await (await request(`${nginx.url}/challenge`, { dispatcher: attacker.dispatcher, headers: forged })).body.json() as Parameters<typeof solve>[0]
  const res2 = await request(`${nginx.url}/task`, {
    dispatcher: attacker.dispatcher,
    method: 'POST',
    headers: { ...forged, 'content-type': 'application/json' },
    body: JSON.stringify(solve(c2, victim)),
  })
  t.equal(res2.statusCode, 403, 'claiming the victim\'s fingerprint is refused')
  t.match(await res2.body.json(), { code: 'AOG_FINGERPRINT_MISMATCH' })
})

t.test('straight at the forwarded listener: every forgery gets 401 and creates no challenge', async (t) => {
  const g = await forwardedGate(t)
  const store = g.gate.store as MemoryStore
  const url = g.url.replace('https:', 'http:')
  const cert = encodeURIComponent(pem('agent.pem').toString())
  const now = Math.floor(Date.now() / 1000)
  const sign = (o: Partial<{ t: number, rid: string, method: string, target: string, verify: string, cert: string, secret: string }> = {}): Record<string, string> => {
    const s = { t: now, rid: randomBytes(16).toString('hex'), method: 'GET', target: '/challenge', verify: 'SUCCESS', cert, secret: SECRET, ...o }
    return { 'x-aog-client-cert': s.cert, 'x-aog-client-verify': s.verify, 'x-aog-signature': signatureHeader(s.secret, s) }
  }
  const get = async (headers: Record<string, string>, path = '/challenge'): Promise<{ status: number, code: string }> => {
    const r = await request(url + path, { headers })
    const j = await r.body.json() as { code?: string }
    return { status: r.statusCode, code: j.code ?? 'ok' }
  }
  const cases: Array<[string, Record<string, string>, string?]> = [
    ['no signature', { 'x-aog-client-cert': cert, 'x-aog-client-verify': 'SUCCESS' }],
    ['a wrong signature', sign({ secret: 'an-entirely-wrong-secret-123' })],
    ['a signature over another path', sign({ target: '/task' })],
    ['a signature over another query', sign({ target: '/challenge?a=1' })],
    ['a signature over another method', sign({ method: 'POST' })],
    ['a stale timestamp', sign({ t: now - 120 })],
    ['a certificate from another CA', sign({ cert: encodeURIComponent(pem('rogue.pem').toString()) })],
    ['a verdict other than SUCCESS', sign({ verify: 'FAILED:unable to verify the first certificate' })],
    ['no headers at all', {}],
  ]
  for (const [name, headers] of cases) t.same(await get(headers), { status: 401, code: 'AOG_IDENTITY_REQUIRED' }, name)
  t.equal(store.size, 0, 'no challenge was created')

  const once = sign()
  t.equal((await get(once)).status, 200, 'a valid header set')
  t.same(await get(once), { status: 401, code: 'AOG_IDENTITY_REQUIRED' }, 'the same request id again: replay refused')
  t.equal(store.size, 1, 'only the valid request created a challenge')
  t.equal((await get(sign({ secret: OLD }))).status, 200, 'a signature made with the previous secret during rotation')
})

t.test('revocation: a CRL updated while the gate runs refuses the agent on its next request, resumed TLS session included', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-rev-'))
  const crl = join(dir, 'crl.pem')
  copyFileSync(emptyCrl(), crl)
  const g = await startGate(t, { crl }, { watchMs: 50 })
  const files = agentFiles('revoked')
  // Node's https.Agent caches TLS sessions: a new connection resumes the previous session.
  const agent = new HttpsAgent({ ...files, keepAlive: false, maxCachedSessions: 10 })
  t.teardown(() => agent.destroy())
  const get = async (): Promise<{ status: number, reused: boolean, code?: string }> => await new Promise((resolve, reject) => {
    const req = httpsRequest(`${g.url}/challenge`, { agent }, (res) => {
      let body = ''
      const reused = (res.socket as TLSSocket).isSessionReused()
      res.on('data', (d) => { body += String(d) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused, code: (JSON.parse(body) as { code?: string }).code }))
    })
    req.on('error', reject)
    req.end()
  })
  t.match(await get(), { status: 200 }, 'not revoked yet')
  t.match(await get(), { status: 200, reused: true }, 'a resumed session')
  copyFileSync(join(DEV, 'crl.pem'), crl)
  const end = Date.now() + 5000
  while (!g.logs.some((l) => l.includes('CRL reloaded')) && Date.now() < end) await sleep(20)
  const after = await get()
  t.same(after, { status: 403, reused: true, code: 'AOG_NOT_AUTHORIZED' }, 'refused on the resumed session')
  // A fresh handshake meets the new CRL in the TLS layer itself.
  const fresh = createAgent({ url: g.url, ...files })
  t.teardown(() => fresh.close())
  const o = await outcome(getChallenge(fresh))
  t.ok(o.startsWith('transport') || o === '403 AOG_NOT_AUTHORIZED', `a new handshake: ${o}`)
  t.equal(await outcome(pass(g.agent())), 'accepted', 'other agents are unaffected')
})

t.test('revocation: the deny list refuses a fingerprint on a kept-alive connection and through nginx, without a restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-deny-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, '# fingerprints refused by this gate\n')
  const direct = await startGate(t, { denyFile: deny }, { watchMs: 50 })
  const fwd = await forwardedGate(t, { denyFile: deny })
  const nginx = await startNginx({ upstreamPort: Number(new URL(fwd.url).port), secretFile: fwd.secrets.nginx })
  t.teardown(() => nginx.stop())
  const a1 = createAgent({ url: direct.url, ...agentFiles('agent2'), connections: 1 })
  const a2 = createAgent({ url: nginx.url, ...agentFiles('agent2') })
  t.teardown(async () => { await a1.close(); await a2.close() })
  t.equal(await outcome(getChallenge(a1)), 'accepted')
  t.equal(await outcome(getChallenge(a2)), 'accepted')
  appendFileSync(deny, `${a1.fingerprint}  # agent2\n`)
  direct.gate.reload() // as SIGHUP does (the file watch would also pick it up)
  fwd.gate.reload()
  t.equal(await outcome(getChallenge(a1)), '403 AOG_NOT_AUTHORIZED', 'direct, same connection')
  t.equal(await outcome(getChallenge(a2)), '403 AOG_NOT_AUTHORIZED', 'through nginx')
})

t.test('--forward-proxy-ca: the forwarded listener speaks HTTPS and requires the proxy\'s own certificate', async (t) => {
  // The dev CA stands in for the proxy CA, and agent2's certificate for nginx's client certificate.
  const g = await forwardedGate(t, { forwardProxyCa: join(DEV, 'ca.pem'), tlsCert: join(DEV, 'server.pem'), tlsKey: join(DEV, 'server-key.pem') })
  const cert = encodeURIComponent(pem('agent.pem').toString())
  const sign = (): Record<string, string> => {
    const s = { t: Math.floor(Date.now() / 1000), rid: randomBytes(16).toString('hex'), method: 'GET', target: '/challenge', verify: 'SUCCESS', cert }
    return { 'x-aog-client-cert': s.cert, 'x-aog-client-verify': s.verify, 'x-aog-signature': signatureHeader(SECRET, s) }
  }
  const proxy = createAgent({ url: g.url, ...agentFiles('agent2') })
  t.teardown(() => proxy.close())
  const ok = await request(`${g.url}/challenge`, { dispatcher: proxy.dispatcher, headers: sign() })
  t.equal(ok.statusCode, 200, 'the proxy with its certificate and a signed header set')
  await ok.body.dump()
  const { Agent } = await import('undici')
  const noCert = new Agent({ connect: { ca: pem('ca.pem') } })
  t.teardown(() => noCert.close())
  await t.rejects(request(`${g.url}/challenge`, { dispatcher: noCert, headers: sign() }), 'no proxy certificate: refused at the handshake')
})

/**
 * A stand-in gate instance behind nginx: records what nginx sent and answers with `status`, or
 * (status 0) resets the connection once it has the whole request (an instance closing as it stops).
 */
async function fakeGate (t: Test, name: string, status: number, seen: Array<{ name: string, method: string, headers: IncomingHttpHeaders }>): Promise<number> {
  const server = createHttpServer((req, res) => {
    req.resume()
    req.on('end', () => {
      seen.push({ name, method: req.method ?? '', headers: req.headers })
      if (status === 0) { req.socket.resetAndDestroy(); return }
      const body = status === 200 ? '{}' : JSON.stringify({ type: 'urn:aog:problem:aog-unavailable', title: 'Service unavailable', status, detail: name, code: 'AOG_UNAVAILABLE' })
      res.writeHead(status, { 'content-type': status === 200 ? 'application/json' : 'application/problem+json', 'retry-after': '1' }).end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  return (server.address() as AddressInfo).port
}

t.test('nginx retries: a connection reset after the request was sent goes to the next instance for GET and POST /task; any other POST that was sent never does', async (t) => {
  const seen: Array<{ name: string, method: string, url?: string, headers: IncomingHttpHeaders }> = []
  const down = await fakeGate(t, 'down', 0, seen)
  const up = await fakeGate(t, 'up', 200, seen)
  // Gate only (no --protect): location / sends everything else to the gate, protected requests included.
  const nginx = await startNginx({ upstreamPort: down, morePorts: [up], secretFile: secretFiles().nginx, options: { maxFails: 0 } })
  t.teardown(() => nginx.stop())
  const agent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  const send = async (method: 'GET' | 'POST', path: string): Promise<number> => {
    const res = await request(`${nginx.url}${path}`, { dispatcher: agent.dispatcher, method, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) })
    await res.body.dump()
    return res.statusCode
  }
  for (const [method, path] of [['GET', '/challenge'], ['POST', '/task'], ['GET', '/protected']] as const) {
    seen.length = 0
    for (let i = 0; i < 4; i++) t.equal(await send(method, path), 200, `${method} ${path} ${i}: answered by the instance that could`)
    t.ok(seen.some((s) => s.name === 'down'), `${method} ${path}: some were sent to the resetting instance first`)
    t.equal(seen.filter((s) => s.name === 'up').length, 4, `${method} ${path}: each answered once by the other`)
  }
  seen.length = 0
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push(await send('POST', '/protected'))
  t.equal(seen.length, 4, 'each protected POST reached exactly one instance: never sent twice')
  t.ok(seen.some((s) => s.name === 'down'), 'some went to the resetting instance')
  t.same(statuses.sort(), seen.map((s) => s.name === 'up' ? 200 : 503).sort(), 'a reset one is answered 503 (nginx\'s own 502 as problem+json)')
})

t.test('nginx does not retry a gate\'s 503: it has spent the signed request id the next would refuse as a replay', async (t) => {
  const seen: Array<{ name: string, method: string, url?: string, headers: IncomingHttpHeaders }> = []
  const busy = await fakeGate(t, 'busy', 503, seen)
  const up = await fakeGate(t, 'up', 200, seen)
  const nginx = await startNginx({ upstreamPort: busy, morePorts: [up], secretFile: secretFiles().nginx, options: { maxFails: 0 } })
  t.teardown(() => nginx.stop())
  const agent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  for (const [method, path] of [['GET', '/challenge'], ['POST', '/task']] as const) {
    seen.length = 0
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await request(`${nginx.url}${path}`, { dispatcher: agent.dispatcher, method, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) })
      if (res.statusCode === 503) t.equal(res.headers['retry-after'], '1', 'the gate\'s Retry-After reaches the agent')
      await res.body.dump()
      statuses.push(res.statusCode)
    }
    t.equal(seen.length, 4, `${method} ${path}: each request reached exactly one instance`)
    t.ok(seen.some((s) => s.name === 'busy'), `${method} ${path}: some reached the busy instance`)
    t.same(statuses.sort(), seen.map((s) => s.name === 'up' ? 200 : 503).sort(), `${method} ${path}: the busy instance's 503 is the answer`)
  }
})

t.test('nginx passes X-Request-Id = $request_id (the signature\'s rid), replacing a client\'s', async (t) => {
  const seen: Array<{ name: string, method: string, headers: IncomingHttpHeaders }> = []
  const port = await fakeGate(t, 'gate', 200, seen)
  const nginx = await startNginx({ upstreamPort: port, secretFile: secretFiles().nginx })
  t.teardown(() => nginx.stop())
  const agent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  const res = await request(`${nginx.url}/challenge`, { dispatcher: agent.dispatcher, headers: { 'x-request-id': 'chosen-by-the-client' } })
  await res.body.dump()
  const h = seen[0]!.headers
  t.match(h['x-request-id'], /^[0-9a-f]{32}$/, 'nginx\'s request id')
  t.equal(/rid=([0-9a-f]{32})/.exec(String(h['x-aog-signature']))?.[1], h['x-request-id'], 'the rid the signature covers')
})

t.test('no gate instance reachable: GET /challenge and POST /task get 503 AOG_UNAVAILABLE problem+json with Retry-After, not nginx\'s HTML 502', async (t) => {
  const nobody = [await freePort(), await freePort()]
  const nginx = await startNginx({ upstreamPort: nobody[0]!, morePorts: [nobody[1]!], secretFile: secretFiles().nginx })
  t.teardown(() => nginx.stop())
  const agent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  for (const [method, path] of [['GET', '/challenge'], ['POST', '/task'], ['GET', '/challenge']] as const) {
    const res = await request(`${nginx.url}${path}`, { dispatcher: agent.dispatcher, method, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) })
    t.equal(res.statusCode, 503, `${method} ${path}: 503`)
    t.equal(res.headers['content-type'], 'application/problem+json')
    t.equal(res.headers['retry-after'], '1')
    t.match(await res.body.json(), { type: 'urn:aog:problem:aog-unavailable', status: 503, code: 'AOG_UNAVAILABLE' })
  }
  t.match(nginx.errors(), /Connection refused|no live upstreams/, 'nginx did try the instances')
})
