/**
 * Step 7: the attestation JWT, with real keys (jose): a gate with a key file; the agent side (the
 * development signer, createAgent's attestation, aog-agent --attestation-key); the attack matrix of
 * a gate without a policy on memory and Redis.
 */
import t, { type Test } from 'tap'
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeJwt, decodeProtectedHeader, exportJWK, SignJWT } from 'jose'
import type { Config } from '../../lib/config.js'
import { refusedWith, startGate } from '../helpers/gate.js'
import { DEV, agentFiles } from '../helpers/pki.js'
import { REDIS_URL, requireRedis } from '../helpers/redis.js'
import { AGENT, run, startServer } from '../helpers/spawn.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { createAgent, getChallenge, localAttestationJwks, localAttestationSigner, pass, solve, submitTask, GateError } from '../../lib/client/agent.js'
import { DEV_ATTESTATION_JWKS, DEV_ATTESTATION_KEY, count, submitWith } from './attestation-fixtures.js'
import { keyPair } from '../helpers/keys.js'

async function fixture (): Promise<{ jwks: string, sign: (claims: Record<string, unknown>) => Promise<string>, signRaw: (claims: Record<string, unknown>) => Promise<string> }> {
  const { publicKey, privateKey } = keyPair('ec', { namedCurve: 'P-256' })
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }
  const dir = mkdtempSync(join(tmpdir(), 'aog-att-'))
  const jwks = join(dir, 'jwks.json')
  writeFileSync(jwks, JSON.stringify({ keys: [jwk] }))
  return {
    jwks,
    sign: async (claims) => await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuedAt().setExpirationTime('1m').setIssuer('https://attest.example').setAudience('aog').sign(privateKey),
    signRaw: async (claims) => await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(privateKey),
  }
}

async function codeOf (p: Promise<unknown>): Promise<string> {
  try { await p } catch (err) { if (err instanceof GateError) return err.code; throw err }
  return 'accepted'
}

t.test('a required attestation must name the caller and the challenge', async (t) => {
  const f = await fixture()
  const g = await startGate(t, { attestationJwks: f.jwks, attestationIssuer: 'https://attest.example', attestationAudience: 'aog', requireAttestation: true })
  const agent = g.agent()
  const other = g.agent('agent2')
  const body = async (): Promise<ReturnType<typeof solve>> => solve(await getChallenge(agent), agent.fingerprint)

  const b1 = await body()
  t.equal(await codeOf(submitTask(agent, b1)), 'AOG_BAD_REQUEST', 'missing when required: 400 before the claim')
  t.equal(await codeOf(submitTask(agent, { ...b1, attestation: await f.sign({ sub: agent.fingerprint, nonce: b1.nonce }) })), 'accepted', 'the same nonce is still good')

  const b2 = await body()
  t.equal(await codeOf(submitTask(agent, { ...b2, attestation: await f.sign({ sub: other.fingerprint, nonce: b2.nonce }) })), 'AOG_ATTESTATION_INVALID', 'another identity')
  const b3 = await body()
  t.equal(await codeOf(submitTask(agent, { ...b3, attestation: await f.sign({ sub: agent.fingerprint, nonce: b1.nonce }) })), 'AOG_ATTESTATION_INVALID', 'another challenge')
  const b4 = await body()
  const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: agent.fingerprint, nonce: b4.nonce, exp: 9e9 })).toString('base64url')}.`
  t.equal(await codeOf(submitTask(agent, { ...b4, attestation: unsigned })), 'AOG_ATTESTATION_INVALID', 'alg none')
  const stranger = await fixture()
  const b5 = await body()
  t.equal(await codeOf(submitTask(agent, { ...b5, attestation: await stranger.sign({ sub: agent.fingerprint, nonce: b5.nonce }) })), 'AOG_ATTESTATION_INVALID', 'a key not in the JWKS')
})

t.test('an attestation sent to a gate that cannot verify one is refused, not ignored', async (t) => {
  const f = await fixture()
  const g = await startGate(t)
  const agent = g.agent()
  const b = solve(await getChallenge(agent), agent.fingerprint)
  t.equal(await codeOf(submitTask(agent, { ...b, attestation: await f.sign({ sub: agent.fingerprint, nonce: b.nonce }) })), 'AOG_ATTESTATION_INVALID')
})

// ---- The agent side: the development signer, the library and the CLI ---------------------------

const devGate = { attestationJwks: DEV_ATTESTATION_JWKS, attestationIssuer: 'aog-dev', requireAttestation: true }

t.test('certs/gen.sh\'s attestation JWKS is the public key of its attestation key, kid and all', async (t) => {
  const published = JSON.parse(readFileSync(DEV_ATTESTATION_JWKS, 'utf8')) as { keys: Array<Record<string, string>> }
  t.same(published, localAttestationJwks(DEV_ATTESTATION_KEY))
  t.same(published.keys[0], { ...localAttestationJwks(createPrivateKey(readFileSync(DEV_ATTESTATION_KEY))).keys[0] }, 'the same from a KeyObject')
})

t.test('an agent with the development signer passes a gate that requires attestation; pass() and agent.fetch() both attest', async (t) => {
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { ...devGate, upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const signer = localAttestationSigner({ key: DEV_ATTESTATION_KEY, issuer: 'aog-dev' })
  const agent = createAgent({ url: g.url, ...agentFiles('agent'), attestation: signer })
  t.teardown(() => agent.close())
  t.match(await pass(agent), { status: 'accepted' })
  const res = await agent.fetch('/hello')
  t.equal(res.statusCode, 200)
  await res.body.dump()
  const agent2 = createAgent({ url: g.url, ...agentFiles('agent2'), attestation: signer })
  t.teardown(() => agent2.close())
  const res2 = await agent2.fetch('/first')
  t.equal(res2.statusCode, 200, 'agent.fetch passed the gate with an attestation on its own')
  await res2.body.dump()
  t.equal(await count(g.metrics.attestationOutcomes, { issuer: 'aog-dev', result: 'accepted', reason: 'ok' }), 2)

  const plain = g.agent('agent')
  t.equal((await refusedWith(pass(plain))).code, 'AOG_BAD_REQUEST', 'without an attestation: 400')
  const failing = createAgent({ url: g.url, ...agentFiles('agent'), attestation: async () => { throw new Error('the attestation service is down') } })
  t.teardown(() => failing.close())
  await t.rejects(pass(failing), /the attestation service is down/, 'a provider that fails: pass rejects with its error, nothing is submitted')
  // A P-256 JWK key and an audience: the gate's options must agree.
  const { privateKey } = keyPair('ec', { namedCurve: 'P-256' })
  const jwkFile = join(mkdtempSync(join(tmpdir(), 'aog-att-')), 'key.jwk')
  writeFileSync(jwkFile, JSON.stringify(privateKey.export({ format: 'jwk' })))
  const jwksFile = join(mkdtempSync(join(tmpdir(), 'aog-att-')), 'jwks.json')
  writeFileSync(jwksFile, JSON.stringify(localAttestationJwks(jwkFile)))
  t.equal(localAttestationJwks(jwkFile).keys[0].alg, 'ES256')
  const aud = await startGate(t, { attestationJwks: jwksFile, attestationIssuer: 'aog-dev', attestationAudience: 'gate-1', requireAttestation: true })
  const withAud = createAgent({ url: aud.url, ...agentFiles('agent'), attestation: localAttestationSigner({ key: jwkFile, issuer: 'aog-dev', audience: 'gate-1', ttlSeconds: 30 }) })
  const noAud = createAgent({ url: aud.url, ...agentFiles('agent'), attestation: localAttestationSigner({ key: jwkFile, issuer: 'aog-dev' }) })
  const wrongIss = createAgent({ url: aud.url, ...agentFiles('agent'), attestation: localAttestationSigner({ key: jwkFile, issuer: 'someone-else', audience: 'gate-1' }) })
  t.teardown(async () => { await Promise.all([withAud.close(), noAud.close(), wrongIss.close()]) })
  t.match(await pass(withAud), { status: 'accepted' })
  const e1 = await refusedWith(pass(noAud))
  t.same([e1.code, e1.problem?.detail], ['AOG_ATTESTATION_INVALID', 'attestation audience (aud) is not this gate'])
  const e2 = await refusedWith(pass(wrongIss))
  t.same([e2.code, e2.problem?.detail], ['AOG_ATTESTATION_INVALID', 'attestation issuer (iss) is not the one this gate trusts'])
})

t.test('the signer refuses keys it cannot use, naming the file, never the key', async (t) => {
  t.throws(() => localAttestationSigner({ key: '/nonexistent/key.pem', issuer: 'x' }), /^attestation key \/nonexistent\/key\.pem: cannot be read \(ENOENT\)$/)
  t.throws(() => localAttestationSigner({ key: join(DEV, 'agent.pem'), issuer: 'x' }), /attestation key .*agent\.pem: holds a public key or certificate/)
  const rsa = keyPair('rsa', { modulusLength: 2048 }).privateKey
  t.throws(() => localAttestationSigner({ key: rsa, issuer: 'x' }), /only Ed25519 \(EdDSA\) and P-256 \(ES256\)/)
  t.throws(() => localAttestationSigner({ key: createPublicKey(rsa), issuer: 'x' }), /a private key is required/)
  t.throws(() => localAttestationSigner({ key: DEV_ATTESTATION_KEY, issuer: 'x', ttlSeconds: 0 }), /ttlSeconds/)
  t.throws(() => localAttestationSigner({ key: DEV_ATTESTATION_KEY, issuer: '' }), /must not be empty/)
  // What it signs: the claims of docs/protocol.md section 4 step 7, a fresh jti each time.
  const sign = localAttestationSigner({ key: DEV_ATTESTATION_KEY, issuer: 'aog-dev', audience: 'a', now: () => 1_700_000_000_000 })
  const c = { nonce: 'AAAAAAAAAAAAAAAAAAAAAA' } as Parameters<typeof sign>[0]
  const [a, b] = [await sign(c, 'ab'.repeat(32)), await sign(c, 'ab'.repeat(32))]
  const p = decodeJwt(a)
  t.match(p, { iss: 'aog-dev', aud: 'a', sub: 'ab'.repeat(32), nonce: c.nonce, iat: 1_700_000_000, exp: 1_700_000_060, jti: /^[A-Za-z0-9_-]{22}$/ })
  t.not(p.jti, decodeJwt(b).jti)
  t.match(decodeProtectedHeader(a), { alg: 'EdDSA', typ: 'JWT', kid: localAttestationJwks(DEV_ATTESTATION_KEY).keys[0].kid })
})

t.test('aog-agent --attestation-key passes aog-server --dev --require-attestation (the README\'s commands)', async (t) => {
  const s = await startServer(['--dev', '--workers', '1', '--require-attestation', '--attestation-jwks', DEV_ATTESTATION_JWKS, '--attestation-issuer', 'aog-dev'],
    { AOG_ITERATIONS: '4096', AOG_CHECKPOINT_INTERVAL: '256', AOG_MIN_NS_PER_ITERATION: '0' })
  t.teardown(() => { s.child.kill('SIGKILL') })
  const tls = ['--url', s.url, '--cert', join(DEV, 'agent.pem'), '--key', join(DEV, 'agent-key.pem'), '--ca', join(DEV, 'ca.pem')]
  const ok = await run(AGENT, [...tls, '--attestation-key', DEV_ATTESTATION_KEY, '--attestation-issuer', 'aog-dev', '--count', '2'])
  t.equal(ok.code, 0, ok.stderr)
  t.match(JSON.parse(ok.stdout.trim().split('\n').pop()!), { summary: true, passed: 2, failed: 0 })
  const without = await run(AGENT, tls)
  t.equal(without.code, 1)
  t.match(JSON.parse(without.stdout.split('\n')[0]!), { status: 400, code: 'AOG_BAD_REQUEST' })
  const noIssuer = await run(AGENT, [...tls, '--attestation-key', DEV_ATTESTATION_KEY])
  t.equal(noIssuer.code, 2)
  t.match(noIssuer.stderr, /missing --attestation-issuer/)
  const noKey = await run(AGENT, [...tls, '--attestation-issuer', 'aog-dev'])
  t.equal(noKey.code, 2)
  t.match(noKey.stderr, /missing --attestation-key/)
  const badKey = await run(AGENT, [...tls, '--attestation-key', join(DEV, 'ca.pem'), '--attestation-issuer', 'aog-dev'])
  t.equal(badKey.code, 2)
  t.match(badKey.stderr, /attestation key .*ca\.pem: holds a public key or certificate/)
  const up = await startEchoUpstream(t)
  const g2 = await startGate(t, { ...devGate, upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const req = await run(AGENT, ['request', '--url', g2.url, '--cert', join(DEV, 'agent.pem'), '--key', join(DEV, 'agent-key.pem'), '--ca', join(DEV, 'ca.pem'),
    '--attestation-key', DEV_ATTESTATION_KEY, '--attestation-issuer', 'aog-dev', '/x'])
  t.equal(req.code, 0, req.stderr)
  t.match(JSON.parse(req.stdout), { url: '/x' }, 'aog-agent request: the pass on the way was attested')
})

// ---- A gate with a key file and no policy: every bad token refused, on memory and Redis ----------

async function fileMatrix (t: Test, over: Partial<Config>, store: string): Promise<void> {
  const f = await fixture()
  const g = await startGate(t, { attestationJwks: f.jwks, attestationIssuer: 'https://attest.example', attestationAudience: 'aog', requireAttestation: true, ...over })
  const agent = g.agent()
  const other = g.agent('agent2')
  const nowS = Math.floor(Date.now() / 1000)
  const jti = randomBytes(8).toString('hex')
  const cases: Array<[string, (n: string, fp: string) => Promise<string>, string]> = [
    ['honest', async (n, fp) => await f.sign({ sub: fp, nonce: n }), 'accepted'],
    ['honest with a jti', async (n, fp) => await f.sign({ sub: fp, nonce: n, jti }), 'accepted'],
    ['the same jti again', async (n, fp) => await f.sign({ sub: fp, nonce: n, jti }), 'attestation already used'],
    ['another identity', async (n) => await f.sign({ sub: other.fingerprint, nonce: n }), 'attestation subject is not the caller (claim sub)'],
    ['another challenge', async (_n, fp) => await f.sign({ sub: fp, nonce: randomBytes(16).toString('base64url') }), 'attestation is for another challenge (claim nonce)'],
    ['no nonce', async (_n, fp) => await f.sign({ sub: fp }), 'attestation is for another challenge (claim nonce)'],
    ['expired', async (n, fp) => await f.signRaw({ sub: fp, nonce: n, iss: 'https://attest.example', aud: 'aog', iat: nowS - 600, exp: nowS - 30 }), 'attestation expired'],
    ['another audience', async (n, fp) => await f.signRaw({ sub: fp, nonce: n, iss: 'https://attest.example', aud: 'elsewhere', exp: nowS + 60 }), 'attestation audience (aud) is not this gate'],
    ['another issuer', async (n, fp) => await f.signRaw({ sub: fp, nonce: n, iss: 'https://evil.example', aud: 'aog', exp: nowS + 60 }), 'attestation issuer (iss) is not the one this gate trusts'],
    ['a stranger\'s key', async (n, fp) => await (await fixture()).sign({ sub: fp, nonce: n }), 'attestation signature or claims invalid'],
  ]
  for (const [name, make, want] of cases) {
    const a = await submitWith(agent, async (c, fp) => await make(c.nonce, fp))
    t.equal(a.outcome === 'accepted' ? 'accepted' : a.detail, want, `${store}: ${name}`)
  }
  t.equal(await count(g.metrics.grantsIssued), 2, `${store}: two accepts, both honest`)
  t.equal(await count(g.metrics.attestationOutcomes, { issuer: 'https://attest.example', result: 'rejected' }), 7)
  t.equal(await count(g.metrics.attestationOutcomes, { issuer: 'unknown', result: 'rejected' }), 1, 'the other issuer is labelled unknown')
}

t.test('a key file, no policy: the attack matrix on memory', async (t) => { await fileMatrix(t, {}, 'memory') })
t.test('a key file, no policy: the attack matrix on Redis', async (t) => {
  await requireRedis()
  await fileMatrix(t, { store: 'redis', redisUrl: REDIS_URL, redisPrefix: `aogatt${randomBytes(3).toString('hex')}:` }, 'redis')
})
