/**
 * Web Bot Auth (docs/protocol.md section 8) in a real gate over real TLS: an agent with no client
 * certificate signs its requests (RFC 9421) with a key from an allowed directory, passes the gate
 * and calls the protected upstream; replays, strangers, denied keys, other authorities and a
 * certificate that fails are refused; no keys is 503. Memory and Redis.
 */
import t, { type Test } from 'tap'
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { createServer as createHttpsServer } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync as readFileSyncText, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Agent, request, type Dispatcher } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles, pem } from '../helpers/pki.js'
import { startEchoUpstream, type Echoed } from '../helpers/upstream.js'
import { startRedis } from '../helpers/redis.js'
import { signRequest } from '../../lib/webbotauth/sign.js'
import { keyThumbprint } from '../../lib/webbotauth/httpsig.js'
import { solveChain } from '../../lib/chain/chain.js'
import { keyPair } from '../helpers/keys.js'

const DIRECTORY = 'https://agent.example'

interface Signer { key: KeyObject, F: string }

function newKey (): Signer {
  const { privateKey, publicKey } = keyPair('ed25519')
  return { key: privateKey, F: Buffer.from(keyThumbprint(publicKey), 'base64url').toString('hex') }
}

/** A --signature-agents file pinning DIRECTORY to a JWKS file of `keys`. */
function agentsFile (keys: KeyObject[], extra = ''): string {
  const dir = mkdtempSync(join(tmpdir(), 'aog-wba-'))
  const jwks = { keys: keys.map((k) => ({ ...k.export({ format: 'jwk' }), d: undefined })).map(({ d: _d, ...pub }) => pub) }
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify(jwks))
  writeFileSync(join(dir, 'agents'), `${DIRECTORY} jwks.json\n${extra}`)
  return join(dir, 'agents')
}

async function wbaGate (t: Test, keys: KeyObject[], overrides: Record<string, unknown> = {}, extra = ''): Promise<TestGate> {
  return await startGate(t, { webBotAuth: true, signatureAgents: agentsFile(keys, extra), ...overrides })
}

/** A client with no certificate (trusting the dev CA), or with the named agent's. */
function client (t: Test, cert?: 'agent' | 'rogue'): Dispatcher {
  // A test may send another Host (the signature's @authority) to this server: undici then checks
  // the certificate against that name, so the name check is left out (the chain is still verified).
  const d = new Agent({ connect: { checkServerIdentity: () => undefined, ...(cert === undefined ? { ca: pem('ca.pem') } : agentFiles(cert)) } })
  t.teardown(() => d.close())
  return d
}

async function signed (g: TestGate, d: Dispatcher, s: Signer | undefined, method: string, target: string, opts: { body?: string, headers?: Record<string, string>, authority?: string, raw?: Record<string, string> } = {}): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, json: any, sent: Record<string, string> }> {
  const authority = opts.authority ?? new URL(g.url).host
  const sig = opts.raw ?? (s === undefined ? {} : signRequest({ method, authority, target }, { key: s.key, directoryUrl: DIRECTORY }))
  const headers = { ...sig, ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }), ...(opts.authority === undefined ? {} : { host: opts.authority }), ...opts.headers }
  const res = await request(g.url + target, { dispatcher: d, method: method as 'GET', headers, ...(opts.body === undefined ? {} : { body: opts.body }) })
  const text = await res.body.text()
  let json: any
  try { json = JSON.parse(text) } catch { json = text }
  return { status: res.statusCode, headers: res.headers, json, sent: sig as Record<string, string> }
}

/** A whole pass with signed requests; returns the POST /task answer. */
async function signedPass (g: TestGate, d: Dispatcher, s: Signer): Promise<{ status: number, json: any }> {
  const c = await signed(g, d, s, 'GET', '/challenge')
  if (c.status !== 200) return c
  const body = { nonce: c.json.nonce, ...solveChain(c.json, s.F), runtime_ms: 1, client_fingerprint: s.F }
  return await signed(g, d, s, 'POST', '/task', { body: JSON.stringify(body) })
}

t.test('an agent without a certificate signs its requests, passes and reaches the upstream (cnf jkt)', async (t) => {
  const s = newKey()
  const up = await startEchoUpstream(t)
  const g = await wbaGate(t, [s.key], { upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const d = client(t)
  const passed = await signedPass(g, d, s)
  t.equal(passed.status, 200, JSON.stringify(passed.json))
  t.equal(passed.json.status, 'accepted')
  const r = await signed(g, d, s, 'GET', '/hello?x=1')
  t.equal(r.status, 200)
  const claims = JSON.parse(Buffer.from(String((r.json as Echoed).headers['x-aog-agent']).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
  t.match(claims, { sub: s.F, htm: 'GET', htu: '/hello?x=1', cnf: { jkt: Buffer.from(s.F, 'hex').toString('base64url') } })
  t.equal((await signed(g, client(t, 'agent'), undefined, 'GET', '/challenge')).status, 200, 'a verified certificate still works without a signature')
})

t.test('every refusal: unsigned, replayed, tampered, other authority, unknown key, denied key, failed certificate', async (t) => {
  const s = newKey()
  const stranger = newKey()
  const dir = mkdtempSync(join(tmpdir(), 'aog-deny-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, '')
  const g = await wbaGate(t, [s.key], { denyFile: deny })
  const d = client(t)

  const unsigned = await signed(g, d, undefined, 'GET', '/challenge')
  t.equal(unsigned.status, 401)
  t.equal(unsigned.json.code, 'AOG_SIGNATURE_INVALID')
  t.match(String(unsigned.headers['accept-signature']), /tag="web-bot-auth"/, 'Accept-Signature says what to sign')

  const first = await signed(g, d, s, 'GET', '/challenge')
  t.equal(first.status, 200)
  const replay = await signed(g, d, s, 'GET', '/challenge', { raw: first.sent })
  t.equal(replay.status, 401, 'the same signature twice: its nonce is single-use')
  t.match(replay.json, { code: 'AOG_SIGNATURE_INVALID', detail: /nonce/ })
  const replayElsewhere = await signed(g, client(t), s, 'GET', '/challenge', { raw: first.sent })
  t.equal(replayElsewhere.status, 401, 'on another connection too')

  const forTask = signRequest({ method: 'GET', authority: new URL(g.url).host, target: '/challenge' }, { key: s.key, directoryUrl: DIRECTORY })
  t.equal((await signed(g, d, s, 'POST', '/task', { raw: forTask, body: '{}' })).json.code, 'AOG_SIGNATURE_INVALID', 'a signature for GET /challenge cannot POST /task')
  t.match((await signed(g, d, s, 'GET', '/challenge', { authority: 'other.example' })).json, { code: 'AOG_SIGNATURE_INVALID', detail: /authority/ }, 'a signature made for another host')
  t.equal((await signed(g, d, stranger, 'GET', '/challenge')).json.code, 'AOG_SIGNATURE_INVALID', 'a key not in the directory')

  const withRogue = await signed(g, client(t, 'rogue'), s, 'GET', '/challenge')
  t.equal(withRogue.status, 401, 'a certificate that fails is refused even with a valid signature')
  t.equal(withRogue.json.code, 'AOG_IDENTITY_REQUIRED')

  writeFileSync(deny, s.F + '\n')
  g.gate.reload()
  const denied = await signed(g, d, s, 'GET', '/challenge')
  t.equal(denied.status, 401, 'the deny list takes key thumbprints')
  t.match(denied.json, { code: 'AOG_SIGNATURE_INVALID', detail: /denied/ })
})

t.test('a directory with no keys: 503 with Retry-After, never an accept', async (t) => {
  const s = newKey()
  const dir = mkdtempSync(join(tmpdir(), 'aog-wba-'))
  // An allowed directory that cannot be fetched (nothing listens on 127.0.0.1:1).
  writeFileSync(join(dir, 'agents'), 'https://127.0.0.1:1/\n')
  const h = await startGate(t, { webBotAuth: true, signatureAgents: join(dir, 'agents') })
  const r = await request(h.url + '/challenge', {
    dispatcher: client(t),
    headers: signRequest({ method: 'GET', authority: new URL(h.url).host, target: '/challenge' }, { key: s.key, directoryUrl: 'https://127.0.0.1:1/' }),
  })
  const json = await r.body.json() as { code: string }
  t.equal(r.statusCode, 503)
  t.equal(json.code, 'AOG_UNAVAILABLE')
  t.ok(Number(r.headers['retry-after']) >= 1)
})

/** A real HTTPS directory server (dev CA) answering with `handler`, and a gate allowing only it. */
async function gateWithDirectory (t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ g: TestGate, url: string }> {
  const dirServer = createHttpsServer({ key: pem('server-key.pem'), cert: pem('server.pem') }, handler)
  await new Promise<void>((resolve) => dirServer.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { dirServer.closeAllConnections(); dirServer.close() })
  const url = `https://localhost:${(dirServer.address() as AddressInfo).port}/keys`
  const dir = mkdtempSync(join(tmpdir(), 'aog-wba-'))
  writeFileSync(join(dir, 'agents'), `${url}\n`)
  const g = await startGate(t, { webBotAuth: true, signatureAgents: join(dir, 'agents'), signatureAgentsCa: join(DEV, 'ca.pem') })
  return { g, url }
}

t.test('a directory that answers with no usable key: 401 (the key is not in it), not 503, and a warning naming why', async (t) => {
  const s = newKey()
  const leaked = createPublicKey(s.key).export({ format: 'jwk' })
  const { g, url } = await gateWithDirectory(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/http-message-signatures-directory+json', 'cache-control': 'max-age=600' })
    res.end(JSON.stringify({ keys: [{ kty: leaked.kty, crv: leaked.crv, x: leaked.x, d: 'the private part, published by mistake' }] }))
  })
  const r = await request(g.url + '/challenge', {
    dispatcher: client(t),
    headers: signRequest({ method: 'GET', authority: new URL(g.url).host, target: '/challenge' }, { key: s.key, directoryUrl: url }),
  })
  t.equal(r.statusCode, 401)
  t.match(await r.body.json(), { code: 'AOG_SIGNATURE_INVALID', detail: 'keyid not in the directory named by Signature-Agent' })
  const line = g.logs.find((l) => l.includes('holds no usable key'))
  t.match(JSON.parse(line ?? '{}'), { level: 40, url, keys: 0, skipped: '1 private part published', ttlSeconds: 60 })
  t.notOk(g.logs.some((l) => l.includes('published by mistake')), 'the private part is never logged')
})

t.test('a signature that expires while its directory is being fetched is refused (step 7 after the key lookup)', async (t) => {
  const s = newKey()
  const pub = createPublicKey(s.key).export({ format: 'jwk' })
  // A real HTTPS directory (dev CA) that takes 1.6 s to answer its first fetch.
  let fetches = 0
  const { g, url } = await gateWithDirectory(t, (_req, res) => {
    fetches++
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/http-message-signatures-directory+json', 'cache-control': 'max-age=600' })
      res.end(JSON.stringify({ keys: [{ kty: pub.kty, crv: pub.crv, x: pub.x }] }))
    }, fetches === 1 ? 1600 : 0)
  })
  const d = client(t)
  const send = async (validitySeconds: number): Promise<{ status: number, json: any }> => {
    const r = await request(g.url + '/challenge', {
      dispatcher: d,
      headers: signRequest({ method: 'GET', authority: new URL(g.url).host, target: '/challenge' }, { key: s.key, directoryUrl: url, validitySeconds }),
    })
    return { status: r.statusCode, json: await r.body.json() }
  }
  // Valid for 1 s (expires = created + 1, created = the current second), sent just after a second
  // begins: live when the gate first checks it (else it would be refused before any fetch, as a
  // request sent late in its second and delayed past it was), expired when the directory answers.
  await new Promise((resolve) => setTimeout(resolve, 1000 - (Date.now() % 1000) + 20))
  const late = await send(1)
  t.equal(late.status, 401, 'expired while the gate waited for the directory: refused')
  t.match(late.json, { code: 'AOG_SIGNATURE_INVALID', detail: /signature expired/ })
  t.equal(fetches, 1, 'refused after the key lookup waited for the directory, not before it')
  const fresh = await send(60)
  t.equal(fresh.status, 200, 'the same key with a live signature passes (the directory is cached now)')
  t.equal(fetches, 1)
})

t.test('Redis: a signature nonce is single-use across two gates', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const s = newKey()
  const file = agentsFile([s.key])
  const common = { webBotAuth: true, signatureAgents: file, store: 'redis' as const, redisUrl: redis.url, signatureAuthorities: 'gate.test' }
  const a = await startGate(t, common)
  const b = await startGate(t, common)
  const one = await signed(a, client(t), s, 'GET', '/challenge', { authority: 'gate.test' })
  t.equal(one.status, 200, JSON.stringify(one.json))
  const other = await signed(b, client(t), s, 'GET', '/challenge', { raw: one.sent, authority: 'gate.test' })
  t.equal(other.status, 401, 'the nonce claimed on gate A is spent on gate B')
  t.match(other.json, { code: 'AOG_SIGNATURE_INVALID', detail: /nonce/ })
  const fresh = await signed(b, client(t), s, 'GET', '/challenge', { authority: 'gate.test' })
  t.equal(fresh.status, 200, 'a fresh signature passes on gate B')
  // The nonce is kept past `expires` by the skew as well, so that an instance whose clock is behind
  // this one's (within the skew it accepts) cannot take the signature once the key is gone.
  const expires = Number(/;expires=(\d+)/.exec(one.sent['signature-input']!)![1]) * 1000
  const onceKeys = (await redis.cli('--scan', '--pattern', '*:o:*')).split('\n').filter((k) => k !== '')
  t.equal(onceKeys.length, 2, 'one single-use key per accepted signature')
  const ttls = await Promise.all(onceKeys.map(async (k) => Number(await redis.cli('pttl', k))))
  for (const ttl of ttls) t.ok(ttl > expires - Date.now() + (a.config.signatureSkewSeconds - 2) * 1000, `kept for expires + the skew (${ttl} ms)`)
})

t.test('an IPv6 listener: a signature for [::1]:port passes, whichever way the address is written, and the certificate\'s expanded form is no obstacle', async (t) => {
  const s = newKey()
  const g = await wbaGate(t, [s.key], { listen: '[::1]:0' })
  const port = new URL(g.url).port
  const d = client(t)
  for (const authority of [`[::1]:${port}`, `[0:0:0:0:0:0:0:1]:${port}`]) {
    const headers = { ...signRequest({ method: 'GET', authority, target: '/challenge' }, { key: s.key, directoryUrl: DIRECTORY }), host: authority }
    const res = await request(`https://[::1]:${port}/challenge`, { dispatcher: d, headers })
    const body = await res.body.json() as { code?: string, detail?: string }
    t.equal(res.statusCode, 200, `${authority}: ${JSON.stringify(body)}`)
  }
  const other = `[::2]:${port}`
  const headers = { ...signRequest({ method: 'GET', authority: other, target: '/challenge' }, { key: s.key, directoryUrl: DIRECTORY }), host: other }
  const res = await request(`https://[::1]:${port}/challenge`, { dispatcher: d, headers })
  t.equal(res.statusCode, 401)
  t.match(await res.body.json(), { detail: 'signature is for another host: @authority is not this gate' })
})

t.test('the agent library and CLI sign for themselves: createAgent({ signing }) and aog-agent --sign-key', async (t) => {
  const { createAgent, pass } = await import('../../lib/client/agent.js')
  const { run, AGENT } = await import('../helpers/spawn.js')
  const { readFileSync } = await import('node:fs')
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { webBotAuth: true, signatureAgents: join(DEV, 'signature-agents'), upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const agent = createAgent({ url: g.url, ca: pem('ca.pem'), signing: { key: readFileSync(join(DEV, 'signing-key.pem')), directoryUrl: 'https://agent.aog.dev' } })
  t.teardown(() => agent.close())
  t.match(agent.fingerprint, /^[0-9a-f]{64}$/, 'F is the key thumbprint in hex')
  t.match(await pass(agent), { status: 'accepted' })
  const r = await agent.fetch('/signed?x=1', { method: 'POST', body: 'hi' })
  t.equal(r.statusCode, 200)
  const e = await r.body.json() as Echoed
  t.match(e, { method: 'POST', url: '/signed?x=1' })
  const cli = await run(AGENT, ['--url', g.url, '--ca', join(DEV, 'ca.pem'), '--sign-key', join(DEV, 'signing-key.pem'), '--signature-agent', 'https://agent.aog.dev', '--count', '2'])
  t.equal(cli.code, 0, cli.stderr)
  t.match(cli.stdout, /"passed":2/)
  const missing = await run(AGENT, ['--url', g.url, '--sign-key', join(DEV, 'signing-key.pem')])
  t.equal(missing.code, 2, 'a signing key without --signature-agent is bad usage')
  t.match(missing.stderr, /signature-agent/)
})

t.test('behind a real nginx (nginx-config --web-bot-auth): a signing agent with no certificate passes and reaches the app; a certificate still works; replays refused', async (t) => {
  const { startNginx } = await import('../helpers/nginx.js')
  const { createAgent, pass } = await import('../../lib/client/agent.js')
  const { readFileSync } = await import('node:fs')
  const dir = mkdtempSync(join(tmpdir(), 'aog-wba-fwd-'))
  writeFileSync(join(dir, 'secret'), 'wba-forward-secret-0123456789\n')
  const up = await startEchoUpstream(t)
  const g = await startGate(t, {
    mode: 'forwarded',
    forwardSecretFile: join(dir, 'secret'),
    assertionKey: join(DEV, 'assertion-key.pem'),
    webBotAuth: true,
    signatureAgents: join(DEV, 'signature-agents'),
  })
  const nginx = await startNginx({ upstreamPort: Number(new URL(g.url).port), secretFile: join(dir, 'secret'), protect: up.url, options: { webBotAuth: true } })
  t.teardown(() => nginx.stop())
  const signer = createAgent({ url: nginx.url, ca: pem('ca.pem'), signing: { key: readFileSync(join(DEV, 'signing-key.pem')), directoryUrl: 'https://agent.aog.dev' } })
  t.teardown(() => signer.close())
  t.match(await pass(signer), { status: 'accepted' }, 'challenge and task through nginx, signed')
  const r = await signer.fetch('/app/x?y=1')
  t.equal(r.statusCode, 200)
  const e = await r.body.json() as Echoed
  const claims = JSON.parse(Buffer.from(String(e.headers['x-aog-agent']).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>
  t.match(claims, { sub: signer.fingerprint, htu: '/app/x?y=1', cnf: { jkt: String } })
  const certAgent = createAgent({ url: nginx.url, ...agentFiles('agent') })
  t.teardown(() => certAgent.close())
  t.match(await pass(certAgent), { status: 'accepted' }, 'an agent with a certificate still passes')
  // The same signed request twice through nginx: nginx signs each with a new request id, the
  // signature's nonce is what makes the second one a replay.
  const d = client(t)
  const sig = signRequest({ method: 'GET', authority: new URL(nginx.url).host, target: '/challenge' }, { key: createPrivateKeyOf(join(DEV, 'signing-key.pem')), directoryUrl: 'https://agent.aog.dev' })
  const first = await request(nginx.url + '/challenge', { dispatcher: d, headers: sig })
  t.equal(first.statusCode, 200)
  await first.body.dump()
  const again = await request(nginx.url + '/challenge', { dispatcher: d, headers: sig })
  t.equal(again.statusCode, 401)
  t.match(await again.body.json(), { code: 'AOG_SIGNATURE_INVALID', detail: /nonce/ })
  const unsigned = await request(nginx.url + '/challenge', { dispatcher: d })
  t.equal(unsigned.statusCode, 401, 'no certificate and no signature')
  await unsigned.body.dump()
})

t.test('forwarded mode warns at start-up when any host is accepted (no --signature-authorities), and not when the hosts are named', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-wba-fwd-'))
  writeFileSync(join(dir, 'secret'), 'wba-forward-secret-0123456789\n')
  const common = { mode: 'forwarded' as const, forwardSecretFile: join(dir, 'secret'), webBotAuth: true, signatureAgents: join(DEV, 'signature-agents') }
  const warned = (g: { logs: string[] }): boolean => g.logs.some((l) => l.includes('"level":40') && l.includes('without --signature-authorities'))
  t.ok(warned(await startGate(t, common)), 'any host: warned')
  t.notOk(warned(await startGate(t, { ...common, signatureAuthorities: 'gate.test' })), 'hosts named: no warning')
})

t.test('a directory with keys the gate cannot use: the usable ones load, and the start-up log warns with the reasons', async (t) => {
  const good = newKey()
  const file = agentsFile([good.key])
  const jwks = join(dirname(file), 'jwks.json')
  const doc = JSON.parse(readFileSyncText(jwks, 'utf8')) as { keys: object[] }
  const leaked = keyPair('ed25519').privateKey.export({ format: 'jwk' })
  writeFileSync(jwks, JSON.stringify({ keys: [...doc.keys, leaked, { kty: 'OKP', crv: 'Ed25519', x: Buffer.alloc(32).toString('base64url') }] }))
  const g = await startGate(t, { webBotAuth: true, signatureAgents: file })
  const line = g.logs.find((l) => l.includes('some of its keys are not usable'))
  t.ok(line, 'warned')
  t.match(JSON.parse(line ?? '{}'), { level: 40, keys: 1, skipped: '1 private part published, 1 weak (small order or not canonical)' })
  t.notOk(line?.includes(String(leaked.d)), 'the leaked private part is not logged')
  const r = await signed(g, client(t), good, 'GET', '/challenge')
  t.equal(r.status, 200, 'the usable key passes')
})

function createPrivateKeyOf (file: string): KeyObject {
  return createPrivateKey(readFileSyncText(file))
}

t.test('a captured signature replayed 30 times takes none of its agent\'s tokens: the agent\'s next request passes, not 429 (memory and Redis)', async (t) => {
  // Whoever holds a copy of a signed request (the protected upstream, to which the gate forwards the
  // signature headers) is not proven to be its agent: replays are refused and charged to no bucket.
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  for (const store of ['memory', 'redis'] as const) {
    await t.test(store, async (t) => {
      const s = newKey()
      const up = await startEchoUpstream(t)
      // Small buckets that do not refill within the test: 30 charged replays would empty both.
      const limits = { rateBurst: 5, ratePerSecond: 0.01, upstreamRateBurst: 5, upstreamRatePerSecond: 0.01 }
      const g = await wbaGate(t, [s.key], { upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem'), ...limits, ...(store === 'redis' ? { store, redisUrl: redis.url } : {}) })
      const d = client(t)
      const replay = async (target: string, raw: Record<string, string>): Promise<number[]> => {
        const seen: number[] = []
        for (let i = 0; i < 30; i++) {
          const r = await signed(g, d, s, 'GET', target, { raw })
          seen.push(r.status)
          if (r.json?.code !== 'AOG_SIGNATURE_INVALID' || !/nonce was already used/.test(String(r.json?.detail))) t.fail(`replay ${i}: ${JSON.stringify(r.json)}`)
        }
        return seen
      }

      const first = await signed(g, d, s, 'GET', '/challenge')
      t.equal(first.status, 200, 'the agent\'s challenge: one token of five')
      t.same(await replay('/challenge', first.sent), Array(30).fill(401), 'its signature replayed 30 times: 401 each')
      const next = await signed(g, d, s, 'GET', '/challenge')
      t.equal(next.status, 200, 'the agent\'s next request passes')
      t.match(String(next.headers.ratelimit), /;r=3;/, 'and has taken the second token')

      t.equal((await signedPass(g, d, s)).status, 200, 'a pass (two more tokens)')
      const proxied = await signed(g, d, s, 'GET', '/private')
      t.equal(proxied.status, 200, 'a protected request: one upstream token of five')
      // What the upstream saw: the signature headers the gate forwarded.
      const seenUp = (proxied.json as Echoed).headers
      const captured = Object.fromEntries(['signature-input', 'signature', 'signature-agent'].map((h) => [h, String(seenUp[h])]))
      t.match(captured, { 'signature-input': /tag="web-bot-auth"/, signature: /^sig\d*=:/ }, 'the upstream holds the signature')
      t.same(await replay('/private', captured), Array(30).fill(401), 'the upstream replays it 30 times: 401 each')
      t.equal((await signed(g, d, s, 'GET', '/private')).status, 200, 'the agent\'s next protected request passes')
    })
  }
})
