/**
 * Logs an operator can act on (issue 21): every request line and handler line names the client's
 * address and identity, refusals name their route (an unknown path is logged, bounded, and never
 * becomes a metric label), and every answer carries X-Request-Id, the id its log line has. In
 * forwarded mode the proxy's request id and client address are taken only from a request whose
 * signature verified.
 */
import t, { type Test } from 'tap'
import { connect } from 'node:tls'
import { randomBytes } from 'node:crypto'
import { Agent, request } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { failingStore } from '../helpers/failing-store.js'
import { DEV, agentFiles, pem } from '../helpers/pki.js'
import { join } from 'node:path'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { certificateFingerprint } from '../../lib/client/agent.js'
import { signatureHeader } from '../../lib/identity/forwarded.js'
import { startNginx, NGINX } from '../helpers/nginx.js'
import { hasTool, missing as missingTool } from '../helpers/tools.js'
import { signRequest } from '../../lib/webbotauth/sign.js'
import { keyThumbprint } from '../../lib/webbotauth/httpsig.js'
import { keyPair } from '../helpers/keys.js'

type Line = Record<string, unknown>

function lines (g: TestGate): Line[] {
  return g.logs.map((l) => JSON.parse(l) as Line)
}

/** The request line of the request answered with `id` (exactly one), waited for (a line is written at its booking). */
async function lineOf (t: Test, g: TestGate, id: unknown): Promise<Line> {
  const end = Date.now() + 5000
  let found: Line[] = []
  while ((found = lines(g).filter((l) => l.msg === 'request' && l.reqId === id)).length === 0 && Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(found.length, 1, `one request line with reqId ${String(id)}`)
  return found[0] ?? {}
}

/** Wait until the gate has booked (and logged) `n` requests more than `before`. */
async function booked (g: TestGate, n: number): Promise<void> {
  const end = Date.now() + 5000
  while (lines(g).filter((l) => l.msg === 'request').length < n) {
    if (Date.now() > end) throw new Error('request lines missing')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Send `text` over the agent's own TLS connection; resolves with all the gate answered until it closed. */
async function rawTls (g: TestGate, text: string): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ...agentFiles('agent') }, () => { s.write(text) })
    let answer = ''
    s.on('data', (d) => { answer += String(d) })
    s.on('end', () => { resolve(answer) })
    s.on('error', reject)
  })
}

const FP = certificateFingerprint(pem('agent.pem')).slice(0, 16)
const AGENT = { fp: FP, subject: 'agent', uri: 'spiffe://aog.dev/agent/agent' }
const LOOPBACK = /^(::ffff:)?127\.0\.0\.1$/

t.test('direct mode: answers and refusals carry X-Request-Id, their lines the address, the identity and the route', async (t) => {
  const { store, fail } = failingStore()
  const g = await startGate(t, {}, { store })

  const ok = await g.raw('agent', '/challenge')
  t.equal(ok.status, 200)
  const id = ok.headers['x-request-id']
  t.match(id, /^[0-9a-f]{16}$/, 'a 200 carries the gate\'s request id')
  await booked(g, 1)
  t.match(await lineOf(t, g, id), { addr: LOOPBACK, ...AGENT, method: 'GET', route: '/challenge', status: 200, outcome: 'ok' }, 'its line: address, fingerprint prefix, subject, SAN URI')

  // A known path with another method: its route, not "unmatched".
  const wrong = await g.raw('agent', '/challenge', { method: 'DELETE' })
  t.equal(wrong.status, 405)
  await booked(g, 2)
  const l405 = await lineOf(t, g, wrong.headers['x-request-id'])
  t.match(l405, { route: '/challenge', status: 405, outcome: 'AOG_METHOD_NOT_ALLOWED', ...AGENT })
  t.notOk('path' in l405, 'a routed request logs no path')

  // An unknown path: route "unmatched" and the path, without its query and cut at 64 characters.
  const long = `/nope/${'x'.repeat(500)}`
  const missing = await g.raw('agent', `${long}?token=secret-in-query`)
  t.equal(missing.status, 404)
  await booked(g, 3)
  const l404 = await lineOf(t, g, missing.headers['x-request-id'])
  t.match(l404, { route: 'unmatched', status: 404, path: `${long.slice(0, 64)}…`, ...AGENT })
  t.notOk(JSON.stringify(l404).includes('secret-in-query'), 'the query is not logged')

  // A store failure: the handler's own line names the request and the caller as well.
  fail()
  const down = await g.raw('agent', '/challenge')
  t.equal(down.status, 503)
  await booked(g, 4)
  const warn = lines(g).filter((l) => l.msg === 'store unavailable')
  t.equal(warn.length, 1, 'one store line')
  t.match(warn[0], { reqId: down.headers['x-request-id'], addr: LOOPBACK, ...AGENT }, 'the handler line: request id, address, identity')
  t.match(await lineOf(t, g, down.headers['x-request-id']), { status: 503, outcome: 'AOG_UNAVAILABLE' })

  // An Expect other than 100-continue: answered by the gate, under its route.
  const expect = await rawTls(g, 'POST /task HTTP/1.1\r\nHost: localhost\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\n{}')
  t.match(expect, /^HTTP\/1\.1 417 /)
  const expectId = /\r\nx-request-id: ([0-9a-f]{16})\r\n/.exec(expect)?.[1]
  t.ok(expectId, 'the 417 carries X-Request-Id')
  await booked(g, 5)
  t.match(await lineOf(t, g, expectId), { route: '/task', status: 417, ...AGENT })

  const ids = lines(g).filter((l) => l.msg === 'request').map((l) => l.reqId)
  t.equal(new Set(ids).size, ids.length, 'every request its own id')
})

t.test('unknown paths never become metric labels', async (t) => {
  const g = await startGate(t)
  for (let i = 0; i < 40; i++) t.equal((await g.raw('agent', `/${randomBytes(6).toString('hex')}`)).status, 404)
  t.equal((await g.raw('agent', '/task')).status, 405)
  const text = await (await request(`${g.opsUrl}/metrics`)).body.text()
  const routes = new Set([...text.matchAll(/^aog_http_request_duration_seconds_count\{[^}]*route="([^"]*)"/gm)].map((m) => m[1]))
  t.same([...routes].sort(), ['/task', 'unmatched'], 'the route label: the matched path, or "unmatched"')
})

t.test('a malformed request (the listener\'s own answer) carries X-Request-Id, logged at debug', async (t) => {
  const g = await startGate(t, { logLevel: 'debug' })
  const answer = await rawTls(g, 'GET /challenge HTTP/1.1\r\nHost: localhost\r\nNo Colon Here\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 400 /, 'a 400')
  const id = /\r\nx-request-id: ([0-9a-f]{16})\r\n/.exec(answer)?.[1]
  t.ok(id, 'with X-Request-Id')
  const line = lines(g).find((l) => l.msg === 'malformed request refused')
  t.match(line, { reqId: id, addr: LOOPBACK, code: 'HPE_INVALID_HEADER_TOKEN' }, 'the debug line names it')
})

t.test('a proxied response carries the X-Request-Id of its line', async (t) => {
  const echo = await startEchoUpstream(t)
  const g = await startGate(t, { upstream: echo.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const agent = g.agent()
  const res = await agent.fetch('/some/where')
  t.equal(res.statusCode, 200)
  await res.body.dump()
  const id = res.headers['x-request-id']
  t.match(id, /^[0-9a-f]{16}$/)
  await booked(g, 3) // the pass (challenge, task) and the proxied request
  t.match(await lineOf(t, g, id), { route: 'upstream', status: 200, upstreamStatus: 200, ...AGENT })
  t.equal(echo.seen.length, 1, 'one request reached the upstream')

  // The client leaves while the upstream has not answered: the line still says what the upstream did.
  const before = lines(g).filter((l) => l.msg === 'request').length
  const held = { n: 0 }
  echo.handler = () => { held.n++ }
  const ac = new AbortController()
  const left = agent.fetch('/slow', { signal: ac.signal })
  while (held.n === 0) await new Promise((resolve) => setTimeout(resolve, 20))
  ac.abort()
  await left.then(() => t.fail('answered'), () => t.pass('the client left'))
  await booked(g, before + 1)
  const last = lines(g).filter((l) => l.msg === 'request')[before]
  t.match(last, { route: 'upstream', status: 499, upstreamStatus: 499, outcome: 'client_closed', ...AGENT }, 'booked with the upstream fields')
})

t.test('forwarded mode: the proxy\'s request id and client address, only from a request whose signature verified', async (t) => {
  const secret = randomBytes(24).toString('hex')
  const dir = mkdtempSync(join(tmpdir(), 'aog-rid-'))
  writeFileSync(join(dir, 'secret'), `${secret}\n`)
  const g = await startGate(t, { mode: 'forwarded', forwardSecretFile: join(dir, 'secret') })
  const url = g.url.replace('https:', 'http:')
  const cert = encodeURIComponent(pem('agent.pem').toString())
  const signed = (rid: string, o: { secret?: string, cert?: string } = {}): Record<string, string> => {
    const s = { t: Math.floor(Date.now() / 1000), rid, method: 'GET', target: '/challenge', verify: 'SUCCESS', cert: o.cert ?? cert }
    return { 'x-aog-client-cert': s.cert, 'x-aog-client-verify': s.verify, 'x-aog-signature': signatureHeader(o.secret ?? secret, s) }
  }
  const get = async (headers: Record<string, string>): Promise<{ status: number, id: unknown }> => {
    const r = await request(`${url}/challenge`, { headers })
    await r.body.dump()
    return { status: r.statusCode, id: r.headers['x-request-id'] }
  }

  const rid = randomBytes(16).toString('hex')
  const ok = await get({ ...signed(rid), 'x-real-ip': '203.0.113.7', 'x-request-id': 'client-chosen' })
  t.same(ok, { status: 200, id: rid }, 'a vouched-for request answers with the proxy\'s id (not the client\'s X-Request-Id)')
  await booked(g, 1)
  t.match(await lineOf(t, g, rid), { addr: LOOPBACK, clientAddr: '203.0.113.7', ...AGENT, route: '/challenge', status: 200 })

  // A signature that verifies over a certificate refused after it: still the proxy's id (nginx logged it).
  const rogueRid = randomBytes(16).toString('hex')
  const rogue = await get({ ...signed(rogueRid, { cert: encodeURIComponent(pem('rogue.pem').toString()) }), 'x-real-ip': '203.0.113.8' })
  t.same(rogue, { status: 401, id: rogueRid }, 'a refusal after the signature verified: the proxy\'s id')
  await booked(g, 2)
  t.match(await lineOf(t, g, rogueRid), { clientAddr: '203.0.113.8', status: 401, outcome: 'AOG_IDENTITY_REQUIRED' })

  // Forged: a wrong secret. The rid and the address it claims are not believed.
  const forgedRid = randomBytes(16).toString('hex')
  const forged = await get({ ...signed(forgedRid, { secret: 'an-entirely-wrong-secret-123' }), 'x-real-ip': '198.51.100.9' })
  t.equal(forged.status, 401)
  t.match(forged.id, /^[0-9a-f]{16}$/, 'the gate\'s own id')
  t.not(forged.id, forgedRid)
  await booked(g, 3)
  const lf = await lineOf(t, g, forged.id)
  t.notOk('clientAddr' in lf, 'no forwarded address from an unverified request')
  t.match(lf, { addr: LOOPBACK, status: 401 })

  // A vouched-for request whose X-Real-IP is not one address: none logged.
  for (const junk of ['1.2.3.4, 5.6.7.8', 'x'.repeat(100), '<script>']) {
    const r = randomBytes(16).toString('hex')
    t.equal((await get({ ...signed(r), 'x-real-ip': junk })).status, 200)
  }
  await booked(g, 6)
  t.equal(lines(g).filter((l) => l.msg === 'request' && 'clientAddr' in l).length, 2, 'only the two well-formed addresses were logged')
})

t.test('through a real nginx: nginx\'s $request_id is the gate\'s, and the client address is the one nginx saw', async (t) => {
  if (!hasTool(NGINX)) { t.pass('nginx missing', { skip: missingTool('nginx', 'nginx libnginx-mod-http-js') }); return }
  const secret = randomBytes(24).toString('hex')
  const dir = mkdtempSync(join(tmpdir(), 'aog-rid-'))
  writeFileSync(join(dir, 'secret'), `${secret}\n`)
  const g = await startGate(t, { mode: 'forwarded', forwardSecretFile: join(dir, 'secret') })
  const nginx = await startNginx({ upstreamPort: Number(new URL(g.url).port), secretFile: join(dir, 'secret') })
  t.teardown(() => nginx.stop())
  // The agent connects from 127.0.0.2 (nginx itself reaches the gate from 127.0.0.1) and claims another address.
  const d = new Agent({ localAddress: '127.0.0.2', connect: { ...agentFiles('agent'), servername: 'localhost' } })
  t.teardown(() => d.close())
  const ids: string[] = []
  for (const path of ['/challenge', '/challenge', '/.well-known/aog/nothing']) {
    const r = await request(`https://127.0.0.1:${nginx.port}${path}`, { dispatcher: d, headers: { 'x-real-ip': '198.51.100.1', 'x-request-id': 'client-chosen' } })
    await r.body.dump()
    const id = r.headers['x-request-id']
    t.match(id, /^[0-9a-f]{32}$/, `${path} ${r.statusCode}: X-Request-Id is nginx's $request_id`)
    ids.push(String(id))
  }
  await booked(g, 3)
  for (const id of ids) t.match(await lineOf(t, g, id), { addr: LOOPBACK, clientAddr: '127.0.0.2', ...AGENT }, 'the line has nginx\'s id and the address nginx saw, not the claimed one')
  t.equal(new Set(ids).size, 3, 'one id per request')
  t.match(await lineOf(t, g, ids[2]), { route: 'unmatched', path: '/.well-known/aog/nothing', status: 404 })
})

t.test('a Web Bot Auth identity: its line names the key (fingerprint prefix, keyid) and its directory', async (t) => {
  const { privateKey, publicKey } = keyPair('ed25519')
  const keyid = keyThumbprint(publicKey)
  const dir = mkdtempSync(join(tmpdir(), 'aog-wba-log-'))
  const { d: _d, ...pub } = privateKey.export({ format: 'jwk' })
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [pub] }))
  writeFileSync(join(dir, 'agents'), 'https://agent.example jwks.json\n')
  const g = await startGate(t, { webBotAuth: true, signatureAgents: join(dir, 'agents') })
  const d = new Agent({ connect: { ca: pem('ca.pem') } })
  t.teardown(() => d.close())
  const authority = new URL(g.url).host
  const r = await request(`${g.url}/challenge`, { dispatcher: d, headers: signRequest({ method: 'GET', authority, target: '/challenge' }, { key: privateKey, directoryUrl: 'https://agent.example' }) })
  await r.body.dump()
  t.equal(r.statusCode, 200)
  const line = await lineOf(t, g, r.headers['x-request-id'])
  t.match(line, { addr: LOOPBACK, fp: Buffer.from(keyid, 'base64url').toString('hex').slice(0, 16), keyid, directory: 'https://agent.example', route: '/challenge', status: 200 })
  t.notOk('subject' in line || 'uri' in line, 'no certificate fields')
  // The same key without Signature-Agent (looked up in every allowed directory), then with it
  // again: each line names what its own request sent (the identity is kept per key and directory).
  const lines = []
  for (const directoryUrl of [undefined, 'https://agent.example']) {
    const again = await request(`${g.url}/challenge`, { dispatcher: d, headers: signRequest({ method: 'GET', authority, target: '/challenge' }, { key: privateKey, directoryUrl }) })
    await again.body.dump()
    t.equal(again.statusCode, 200)
    lines.push(await lineOf(t, g, again.headers['x-request-id']))
  }
  t.match(lines[0], { keyid, route: '/challenge', status: 200 })
  t.notOk('directory' in lines[0]!, 'no directory named: none in the line')
  t.match(lines[1], { keyid, directory: 'https://agent.example' })
})
