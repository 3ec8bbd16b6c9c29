/**
 * X-AOG-Agent (docs/protocol.md section 7): key files (PEM, JWK; Ed25519, P-256) and their refusals,
 * kid = RFC 7638 thumbprint, tokens that jose verifies against the published JWKS, jti uniqueness,
 * rotation, tampering, cnf, certs/gen.sh's keys and the JWKS on the operations listener.
 */
import t from 'tap'
import { createHash, X509Certificate, type KeyObject } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose'
import { request } from 'undici'
import { cnfOf, createAssertionSigner, jwksCommand, loadAssertionKeys } from '../../lib/assertion.js'
import { createOpsServer, type OpsOptions } from '../../lib/gate/ops.js'
import { createLogger } from '../../lib/log.js'
import { createMetrics } from '../../lib/metrics.js'
import { fingerprintOf } from '../../lib/identity/tls.js'
import { pem, ROOT } from '../helpers/pki.js'
import { keyPair } from '../helpers/keys.js'

const dir = mkdtempSync(join(tmpdir(), 'aog-assertion-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
function file (name: string, content: string | Buffer): string {
  const p = join(dir, name)
  writeFileSync(p, content, { mode: 0o600 })
  return p
}

function pair (type: 'ed25519' | 'p256' | 'p384' | 'rsa' | 'x25519'): KeyObject {
  if (type === 'p256') return keyPair('ec', { namedCurve: 'P-256' }).privateKey
  if (type === 'p384') return keyPair('ec', { namedCurve: 'P-384' }).privateKey
  if (type === 'rsa') return keyPair('rsa', { modulusLength: 2048 }).privateKey
  if (type === 'x25519') return keyPair('x25519').privateKey
  return keyPair('ed25519').privateKey
}
const pkcs8 = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }) as string
const jwkOf = (k: KeyObject): string => JSON.stringify(k.export({ format: 'jwk' }))

const ed = pair('ed25519')
const p256 = pair('p256')
const FILES = {
  edPem: file('ed.pem', pkcs8(ed)),
  edJwk: file('ed.jwk', jwkOf(ed)),
  p256Pem: file('p256.pem', pkcs8(p256)),
  p256Sec1: file('p256-sec1.pem', p256.export({ type: 'sec1', format: 'pem' }) as string),
  p256Jwk: file('p256.jwk', jwkOf(p256)),
}

const FP = fingerprintOf(new X509Certificate(pem('agent.pem')).raw)
const claims = { sub: FP, htm: 'POST', htu: '/api/items?x=1&y=%20', cnf: cnfOf({ fingerprint: FP }), grant_exp: Date.now() + 300_000 }

/** jose's verification of a token against a JWKS (as an upstream would, after a JSON round trip). */
async function verify (token: string, jwks: object, o: { issuer?: string, audience?: string, currentDate?: Date } = {}): Promise<{ payload: Record<string, unknown>, protectedHeader: Record<string, unknown> }> {
  const r = await jwtVerify(token, createLocalJWKSet(JSON.parse(JSON.stringify(jwks))), {
    issuer: o.issuer ?? 'aog-test',
    audience: o.audience ?? 'https://upstream.example',
    algorithms: ['EdDSA', 'ES256'],
    typ: 'aog-agent+jwt',
    currentDate: o.currentDate,
  })
  return { payload: r.payload as Record<string, unknown>, protectedHeader: r.protectedHeader as Record<string, unknown> }
}

t.test('PEM (PKCS#8, SEC1) and JWK of both key types load; kid is the RFC 7638 thumbprint', async (t) => {
  const cases: Array<[string, string, 'EdDSA' | 'ES256']> = [
    ['Ed25519 PKCS#8 PEM', FILES.edPem, 'EdDSA'],
    ['Ed25519 JWK', FILES.edJwk, 'EdDSA'],
    ['P-256 PKCS#8 PEM', FILES.p256Pem, 'ES256'],
    ['P-256 SEC1 PEM', FILES.p256Sec1, 'ES256'],
    ['P-256 JWK', FILES.p256Jwk, 'ES256'],
  ]
  for (const [name, f, alg] of cases) {
    const k = loadAssertionKeys([f]).keys[0]
    t.equal(k.alg, alg, `${name}: ${alg}`)
    const pub = k.alg === 'EdDSA' ? { kty: k.jwk.kty, crv: k.jwk.crv, x: k.jwk.x } : { kty: k.jwk.kty, crv: k.jwk.crv, x: k.jwk.x, y: k.jwk.y }
    t.equal(k.kid, await calculateJwkThumbprint(pub, 'sha256'), `${name}: kid is jose's thumbprint`)
    t.equal(k.jwk.kid, k.kid)
    t.same(Object.keys(k.jwk), alg === 'EdDSA' ? ['kty', 'crv', 'x', 'kid', 'alg', 'use'] : ['kty', 'crv', 'x', 'y', 'kid', 'alg', 'use'], `${name}: public members only`)
    t.equal(k.jwk.use, 'sig')
  }
  t.equal(loadAssertionKeys([FILES.edPem]).keys[0].kid, loadAssertionKeys([FILES.edJwk]).keys[0].kid, 'PEM and JWK of one key: one kid')
  t.equal(loadAssertionKeys([FILES.p256Pem]).keys[0].kid, loadAssertionKeys([FILES.p256Sec1]).keys[0].kid)

  // `openssl ecparam -genkey` writes an EC PARAMETERS block before the key.
  const withParams = join(dir, 'ecparam.pem')
  execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-out', withParams], { stdio: 'ignore' })
  t.equal(loadAssertionKeys([withParams]).keys[0].alg, 'ES256', 'a SEC1 key after EC PARAMETERS')
})

t.test('a token verifies with jose against the JWKS, with every claim of section 7', async (t) => {
  for (const f of [FILES.edPem, FILES.p256Pem]) {
    const keys = loadAssertionKeys([f])
    const fixed = Date.now() - 1500
    const signer = createAssertionSigner({ keys, issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 42, now: () => fixed })
    const token = await signer.sign(claims)
    t.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'compact JWS')
    const { payload, protectedHeader } = await verify(token, signer.jwks())
    t.same(protectedHeader, { alg: signer.alg, kid: signer.kid, typ: 'aog-agent+jwt' }, 'header: alg, kid, typ')
    t.same(Object.keys(payload).sort(), ['aud', 'cnf', 'exp', 'grant_exp', 'htm', 'htu', 'iat', 'iss', 'jti', 'sub'])
    t.equal(payload.iat, Math.floor(fixed / 1000), 'iat from the clock, in seconds')
    t.equal((payload.exp as number) - (payload.iat as number), 42, 'exp - iat = ttl')
    t.match(payload, { iss: 'aog-test', aud: 'https://upstream.example', sub: FP, htm: 'POST', htu: '/api/items?x=1&y=%20', grant_exp: claims.grant_exp })
    t.same(payload.cnf, { 'x5t#S256': Buffer.from(FP, 'hex').toString('base64url') })
    t.match(payload.jti, /^[A-Za-z0-9_-]{22}$/, 'jti: 16 random bytes, base64url')
    await t.rejects(verify(token, signer.jwks(), { issuer: 'other' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'wrong iss')
    await t.rejects(verify(token, signer.jwks(), { audience: 'other' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'wrong aud')
    await t.rejects(verify(token, signer.jwks(), { currentDate: new Date((Math.floor(fixed / 1000) + 43) * 1000) }), { code: 'ERR_JWT_EXPIRED' }, 'expired after ttl')
  }
})

t.test('ttl is 1 to 60 s; issuer and audience are not empty', async (t) => {
  const keys = loadAssertionKeys([FILES.edPem])
  for (const ttlSeconds of [0, 61, 1.5, Number.NaN]) {
    t.throws(() => createAssertionSigner({ keys, issuer: 'a', audience: 'b', ttlSeconds }), /ttlSeconds/, `ttl ${ttlSeconds}`)
  }
  t.ok(createAssertionSigner({ keys, issuer: 'a', audience: 'b', ttlSeconds: 60 }))
  t.throws(() => createAssertionSigner({ keys, issuer: '', audience: 'b', ttlSeconds: 30 }), /issuer/)
  t.throws(() => createAssertionSigner({ keys, issuer: 'a', audience: '', ttlSeconds: 30 }), /audience/)
})

t.test('1000 tokens have 1000 distinct jti', async (t) => {
  const signer = createAssertionSigner({ keys: loadAssertionKeys([FILES.p256Pem]), issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 30 })
  const jtis = new Set<string>()
  for (let i = 0; i < 1000; i++) {
    const token = await signer.sign(claims)
    jtis.add(JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti)
  }
  t.equal(jtis.size, 1000)
  // A second signer (another instance) draws its own.
  const other = createAssertionSigner({ keys: loadAssertionKeys([FILES.p256Pem]), issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 30 })
  const jti = JSON.parse(Buffer.from((await other.sign(claims)).split('.')[1]!, 'base64url').toString()).jti as string
  t.notOk(jtis.has(jti))
})

t.test('rotation: the first file signs, every key is published', async (t) => {
  const oldFirst = loadAssertionKeys([FILES.edPem, FILES.p256Pem])
  const newFirst = loadAssertionKeys([FILES.p256Jwk, FILES.edJwk])
  const a = createAssertionSigner({ keys: oldFirst, issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 30 })
  const b = createAssertionSigner({ keys: newFirst, issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 30 })
  t.equal(a.kid, oldFirst.keys[0].kid)
  t.equal(a.alg, 'EdDSA')
  t.equal(b.alg, 'ES256')
  t.same(a.jwks().keys.map((k) => k.kid), [oldFirst.keys[0].kid, oldFirst.keys[1]!.kid], 'both keys, signing key first')
  t.same(new Set(a.jwks().keys.map((k) => k.kid)), new Set(b.jwks().keys.map((k) => k.kid)), 'one JWKS either way')
  const fromB = await b.sign(claims)
  t.equal(decodeProtectedHeader(fromB).kid, oldFirst.keys[1]!.kid)
  t.ok(await verify(fromB, a.jwks()), 'a token of the second key verifies against the first instance\'s JWKS')
  t.ok(await verify(await a.sign(claims), b.jwks()), 'and the other way round')
  // Once the old key is gone from the JWKS, its tokens no longer verify.
  const onlyNew = createAssertionSigner({ keys: loadAssertionKeys([FILES.p256Pem]), issuer: 'x', audience: 'x', ttlSeconds: 1 })
  await t.rejects(verify(await a.sign(claims), onlyNew.jwks()), { code: 'ERR_JWKS_NO_MATCHING_KEY' })
})

t.test('a tampered token fails', async (t) => {
  for (const f of [FILES.edPem, FILES.p256Pem]) {
    const signer = createAssertionSigner({ keys: loadAssertionKeys([f]), issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 30 })
    const jwks = signer.jwks()
    const token = await signer.sign(claims)
    const [h, p, s] = token.split('.') as [string, string, string]
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString())
    const forged = Buffer.from(JSON.stringify({ ...payload, htu: '/admin' })).toString('base64url')
    await t.rejects(verify(`${h}.${forged}.${s}`, jwks), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'another path')
    const sig = Buffer.from(s, 'base64url')
    sig[5]! ^= 1
    await t.rejects(verify(`${h}.${p}.${sig.toString('base64url')}`, jwks), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'a flipped signature bit')
    const none = Buffer.from(JSON.stringify({ alg: 'none', typ: 'aog-agent+jwt' })).toString('base64url')
    await t.rejects(verify(`${none}.${p}.`, jwks), 'alg none')
  }
})

t.test('the JWKS never holds a private member; jwksCommand prints it', async (t) => {
  const files = [FILES.edPem, FILES.p256Sec1]
  const keys = loadAssertionKeys(files)
  const signer = createAssertionSigner({ keys, issuer: 'a', audience: 'b', ttlSeconds: 30 })
  const text = jwksCommand(files)
  t.ok(text.endsWith('}\n'), 'newline-terminated')
  t.match(text, /^\{\n {2}"keys": \[\n/, 'pretty')
  t.same(JSON.parse(text), JSON.parse(JSON.stringify(signer.jwks())), 'the same JWKS the signer publishes')
  for (const s of [text, JSON.stringify(signer.jwks())]) {
    t.notMatch(s, /"d"/, 'no "d"')
    t.notMatch(s, /"(p|q|dp|dq|qi|k)"/, 'no other private member')
    for (const k of keys.keys) {
      const d = k.privateKey.export({ format: 'jwk' }).d!
      t.notOk(s.includes(d), 'the private scalar appears nowhere')
    }
  }
  t.ok(Object.isFrozen(signer.jwks()) && Object.isFrozen(signer.jwks().keys[0]), 'frozen: a caller cannot change what is served')
})

t.test('refused files: the message names the file and the reason, never key material', async (t) => {
  const rsa = pair('rsa')
  const p384 = pair('p384')
  const secret = 'S3CRETS3CRETS3CRET'
  const publicEdJwk = JSON.parse(jwkOf(ed)) as Record<string, string>
  delete publicEdJwk.d
  const encrypted = p256.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }) as string
  const cases: Array<[string, string, RegExp]> = [
    ['RSA PEM', file('rsa.pem', pkcs8(rsa)), /is an RSA key: only Ed25519 \(EdDSA\) and P-256 \(ES256\)/],
    ['RSA JWK', file('rsa.jwk', jwkOf(rsa)), /is a JWK of another type \(kty RSA\)/],
    ['P-384 PEM', file('p384.pem', pkcs8(p384)), /is an EC key on P-384/],
    ['P-384 JWK', file('p384.jwk', jwkOf(p384)), /kty EC, crv P-384/],
    ['X25519 PEM', file('x25519.pem', pkcs8(pair('x25519'))), /is a x25519 key/],
    ['public PEM', file('pub.pem', keyPair('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string), /holds a public key or certificate, not a private key/],
    ['certificate', file('cert.pem', pem('agent.pem')), /holds a public key or certificate/],
    ['public JWK', file('pub.jwk', JSON.stringify(publicEdJwk)), /is a public JWK \(no "d"\)/],
    ['JWK set', file('set.jwk', JSON.stringify({ keys: [JSON.parse(jwkOf(ed))] })), /is a JWK set/],
    ['wrong alg in JWK', file('alg.jwk', JSON.stringify({ ...JSON.parse(jwkOf(ed)), alg: 'ES256' })), /"alg" does not match its key \(EdDSA expected\)/],
    ['encrypted PEM', file('enc.pem', encrypted), /is an encrypted private key/],
    ['missing file', join(dir, 'nope.pem'), /cannot be read \(ENOENT\)/],
    ['a directory', dir, /cannot be read \(EISDIR\)/],
    ['garbage', file('garbage', `not a key ${secret}\n`), /is neither a PEM private key nor a JWK/],
    ['bad JSON', file('bad.json', `{"kty":"OKP","crv":"Ed25519","d":"${secret}",`), /is not valid JSON/],
    ['JSON array', file('array.json', '[1]'), /is not a JWK/],
    ['broken JWK', file('broken.jwk', JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: 'AAAA', d: secret })), /is not a valid private JWK/],
    ['broken PEM', file('broken.pem', `-----BEGIN PRIVATE KEY-----\n${Buffer.from(secret).toString('base64')}\n-----END PRIVATE KEY-----\n`), /is not a readable PEM private key/],
  ]
  for (const [name, f, reason] of cases) {
    let err: Error | undefined
    try { loadAssertionKeys([FILES.edPem, f]) } catch (e) { err = e as Error }
    t.ok(err instanceof Error, `${name}: refused`)
    t.ok(err?.message.startsWith(`assertion key ${f}: `), `${name}: names the file (${err?.message})`)
    t.match(err?.message, reason, `${name}: the reason`)
    t.notOk(err?.message.includes(secret) || err?.message.includes(Buffer.from(secret).toString('base64')), `${name}: no file content`)
  }
  t.throws(() => loadAssertionKeys([]), /no key file given/)
  t.throws(() => loadAssertionKeys([FILES.edPem, FILES.edJwk]), { message: `assertion key ${FILES.edJwk}: is the same key as ${FILES.edPem}` }, 'one key twice')
})

t.test('cnf: x5t#S256 of a certificate (its DER SHA-256), jkt of a signature key', async (t) => {
  const x = new X509Certificate(pem('agent.pem'))
  const sha = createHash('sha256').update(x.raw).digest('base64url')
  t.same(cnfOf({ fingerprint: FP }), { 'x5t#S256': sha })
  t.same(cnfOf({ fingerprint: FP.toUpperCase(), kind: 'certificate' }), { 'x5t#S256': sha })
  t.same(cnfOf({ fingerprint: x.fingerprint256.replace(/:/g, '').toLowerCase() }), { 'x5t#S256': sha }, 'the same as X509Certificate.fingerprint256')
  // Section 8: F of a signature key is the hex of its RFC 7638 thumbprint; jkt is that thumbprint.
  const jkt = await calculateJwkThumbprint(JSON.parse(jwkOf(ed)) as JWK)
  t.same(cnfOf({ fingerprint: Buffer.from(jkt, 'base64url').toString('hex'), kind: 'signature-key' }), { jkt })
  t.throws(() => cnfOf({ fingerprint: 'ab' }), /not 64 hex/)
  t.throws(() => cnfOf({ fingerprint: 'zz'.repeat(32) }), /not 64 hex/)
})

t.test('certs/gen.sh writes an Ed25519 assertion key and a P-256 one for rotation', async (t) => {
  const out = join(dir, 'pki')
  execFileSync('bash', [join(ROOT, 'certs', 'gen.sh'), out], { stdio: 'ignore' })
  const keys = loadAssertionKeys([join(out, 'assertion-key.pem'), join(out, 'assertion-key-2.pem')]).keys
  t.same(keys.map((k) => k.alg), ['EdDSA', 'ES256'])
})

t.test('the operations listener serves the JWKS, 404 without a signer', async (t) => {
  const signer = createAssertionSigner({ keys: loadAssertionKeys([FILES.edPem, FILES.p256Pem]), issuer: 'aog-test', audience: 'https://upstream.example', ttlSeconds: 30 })
  const base: OpsOptions = {
    logger: createLogger({ level: 'silent', destination: { write: () => {} } }),
    metrics: createMetrics({ defaults: false }),
    store: { ping: async () => {} } as unknown as OpsOptions['store'],
    pool: { up: true } as unknown as OpsOptions['pool'],
    crlStatus: () => undefined,
    crlGraceSeconds: 0,
    closing: () => false,
  }
  const listen = async (o: OpsOptions): Promise<string> => {
    const server = createOpsServer(o)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections() }))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }
  const withKeys = await listen({ ...base, jwks: signer.jwks })
  const res = await request(withKeys + '/.well-known/jwks.json')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'application/jwk-set+json')
  t.equal(res.headers['cache-control'], 'public, max-age=300')
  const body = await res.body.json() as { keys: JWK[] }
  t.same(body, JSON.parse(JSON.stringify(signer.jwks())))
  t.ok(await verify(await signer.sign(claims), body), 'a token verifies against what is served')
  const head = await request(withKeys + '/.well-known/jwks.json', { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  await head.body.dump()
  const post = await request(withKeys + '/.well-known/jwks.json', { method: 'POST' })
  t.equal(post.statusCode, 405)
  await post.body.dump()
  const healthz = await request(withKeys + '/healthz')
  t.equal(healthz.statusCode, 200, 'the rest unchanged')
  await healthz.body.dump()

  const without = await listen(base)
  const none = await request(without + '/.well-known/jwks.json')
  t.equal(none.statusCode, 404)
  await none.body.dump()
})

t.test('aog-server jwks prints the public JWKS of its key files; a bad file exits 2 naming it', async (t) => {
  const { run, SERVER } = await import('../helpers/spawn.js')
  const files = [join(ROOT, 'certs/dev/assertion-key.pem'), join(ROOT, 'certs/dev/assertion-key-2.pem')]
  const ok = await run(SERVER, ['jwks', ...files])
  t.equal(ok.code, 0)
  t.equal(ok.stdout, jwksCommand(files))
  const jwks = JSON.parse(ok.stdout) as { keys: Array<Record<string, unknown>> }
  t.same(jwks.keys.map((k) => k.alg), ['EdDSA', 'ES256'])
  t.notOk(ok.stdout.includes('"d"'), 'no private member')
  const fromEnv = await run(SERVER, ['jwks'], { AOG_ASSERTION_KEY: files.join(',') })
  t.equal(fromEnv.stdout, ok.stdout, 'AOG_ASSERTION_KEY when no file is given')
  const bad = await run(SERVER, ['jwks', '/nonexistent/key.pem'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /\/nonexistent\/key\.pem/)
  const none = await run(SERVER, ['jwks'], { AOG_ASSERTION_KEY: '' })
  t.equal(none.code, 2)
})
