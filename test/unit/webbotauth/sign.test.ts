/**
 * The agent-side signer (lib/webbotauth/sign.ts): what it sends, a fixed worked example byte for
 * byte (test/fixtures/webbotauth/aog-signed-request.json, the one docs/protocol.md section 8 shows),
 * round trips through the gate's verifier and through two independent implementations
 * (web-bot-auth, http-message-signatures) both ways, and the options it refuses.
 */
import t from 'tap'
import { createPrivateKey, createPublicKey, verify as cryptoVerify, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseDictionary, type InnerList } from 'structured-headers'
import { createVerifier, httpbis } from 'http-message-signatures'
import { signatureHeaders, verify as wbaVerify } from 'web-bot-auth'
import { signerFromJWK, verifierFromJWK } from 'web-bot-auth/crypto'
import { NONCE_BYTES, signRequest } from '../../../lib/webbotauth/sign.js'
import { keyThumbprint, signatureBase, verifyRequest, type SignedRequest, type VerifyOptions } from '../../../lib/webbotauth/httpsig.js'
import { ROOT } from '../../helpers/pki.js'
import { keyPair } from '../../helpers/keys.js'

const FIXTURES = join(ROOT, 'test', 'fixtures', 'webbotauth')
const DIR = 'https://agent.example'
const AUTHORITY = 'gate.example:8443'

const key = keyPair('ed25519').privateKey
const pub = createPublicKey(key)
const KEYID = keyThumbprint(pub)

function opts (now: number, more: Partial<VerifyOptions> = {}): VerifyOptions {
  return {
    now,
    skewSeconds: 30,
    maxValiditySeconds: 300,
    resolveKey: async (url, keyid) => url !== undefined && url !== DIR ? 'unknown-directory' : keyid === KEYID ? pub : undefined,
    ...more,
  }
}

function asRequest (method: string, target: string, headers: Record<string, string | undefined>): SignedRequest {
  return { method, authority: AUTHORITY, target, scheme: 'https', headers }
}

t.test('what it sends: the components, parameters, a fresh 64-byte nonce, the dictionary Signature-Agent', async (t) => {
  const now = 1_780_000_000_500
  const h = signRequest({ method: 'GET', authority: AUTHORITY, target: '/challenge?x=1' }, { key, directoryUrl: DIR, now })
  t.equal(h['signature-agent'], `sig1="${DIR}"`)
  const il = parseDictionary(h['signature-input']).get('sig1') as InnerList
  t.same(il[0].map(([n, p]) => [n, Object.fromEntries(p)]), [['@method', {}], ['@authority', {}], ['@path', {}], ['signature-agent', { key: 'sig1' }]])
  t.same(Object.fromEntries([...il[1]].filter(([k]) => k !== 'nonce')), { created: 1_780_000_000, expires: 1_780_000_060, keyid: KEYID, alg: 'ed25519', tag: 'web-bot-auth' })
  const nonce = il[1].get('nonce') as string
  t.equal(Buffer.from(nonce, 'base64').length, NONCE_BYTES)
  const second = (parseDictionary(signRequest({ method: 'GET', authority: AUTHORITY, target: '/' }, { key, now })['signature-input']).get('sig1') as InnerList)[1].get('nonce')
  t.not(second, nonce, 'a fresh nonce per request')
  t.match(signRequest({ method: 'GET', authority: AUTHORITY, target: '/' }, { key }), { 'signature-input': /^sig1=\("@method" "@authority" "@path"\);created=\d+;expires=\d+;/ }, 'no directory: no Signature-Agent')
  t.notOk('signature-agent' in signRequest({ method: 'GET', authority: AUTHORITY, target: '/' }, { key }))
  const legacy = signRequest({ method: 'GET', authority: AUTHORITY, target: '/' }, { key, directoryUrl: DIR, signatureAgentForm: 'string', label: 'agent', validitySeconds: 30, now })
  t.equal(legacy['signature-agent'], `"${DIR}"`)
  t.match(legacy['signature-input'], /^agent=\("@method" "@authority" "@path" "signature-agent"\);created=1780000000;expires=1780000030;/)
  t.match(legacy.signature, /^agent=:[A-Za-z0-9+/]{86}==:$/)
})

t.test('a fixed worked example (RFC 9421 test key, fixed time and nonce), byte for byte', async (t) => {
  const ex = JSON.parse(readFileSync(join(FIXTURES, 'aog-signed-request.json'), 'utf8')) as {
    key: JsonWebKey
    now: number
    nonce: string
    directory: string
    request: { method: string, authority: string, target: string }
    headers: Record<string, string>
    base: string[]
    keyid: string
    thumbprint_hex: string
  }
  const k = createPrivateKey({ key: ex.key, format: 'jwk' })
  const h = signRequest(ex.request, { key: k, directoryUrl: ex.directory, now: ex.now, nonce: ex.nonce })
  t.same(h, ex.headers)
  const req: SignedRequest = { ...ex.request, scheme: 'https', headers: { host: ex.request.authority, ...h } }
  t.equal(signatureBase(req, h['signature-input'], 'sig1'), ex.base.join('\n'))
  t.equal(keyThumbprint(k), ex.keyid)
  const sig = Buffer.from((parseDictionary(h.signature).get('sig1')![0]) as ArrayBuffer)
  t.ok(cryptoVerify(null, Buffer.from(ex.base.join('\n')), createPublicKey(k), sig))
  const v = await verifyRequest(req, { now: ex.now, skewSeconds: 30, maxValiditySeconds: 300, resolveKey: async (url, keyid) => url === ex.directory && keyid === ex.keyid ? createPublicKey(k) : undefined })
  t.equal(v.thumbprintHex, ex.thumbprint_hex)
  // http-message-signatures rebuilds the same base (its clock is the real one: a wide tolerance).
  const ok = await httpbis.verifyMessage({
    keyLookup: async (p) => p.keyid === ex.keyid ? { id: ex.keyid, algs: ['ed25519'], verify: createVerifier(createPublicKey(k), 'ed25519') } : null,
    tolerance: 10 * 365 * 86_400,
  }, { method: ex.request.method, url: `https://${ex.request.authority}${ex.request.target}`, headers: h as unknown as Record<string, string> })
  t.equal(ok, true, 'http-message-signatures verifies the example')
})

t.test('round trips through the gate\'s verifier', async (t) => {
  const now = Date.now()
  for (const form of ['dictionary', 'string'] as const) {
    const h = signRequest({ method: 'POST', authority: AUTHORITY, target: '/task?a=b' }, { key, directoryUrl: DIR, signatureAgentForm: form, now })
    const v = await verifyRequest(asRequest('POST', '/task?a=b', { ...h }), opts(now))
    t.match(v, { keyid: KEYID, directory: DIR }, form)
    await t.rejects(verifyRequest(asRequest('GET', '/task?a=b', { ...h }), opts(now)), { code: 'AOG_SIGNATURE_INVALID', detail: 'signature does not verify' })
  }
  const bare = signRequest({ method: 'GET', authority: AUTHORITY, target: '/challenge' }, { key, now })
  t.equal((await verifyRequest(asRequest('GET', '/challenge', { ...bare }), opts(now))).directory, undefined)
  // Extra covered headers.
  const covered = signRequest({ method: 'POST', authority: AUTHORITY, target: '/task', headers: { 'Content-Type': 'application/json' } }, { key, directoryUrl: DIR, now, cover: ['content-type'] })
  t.match(covered['signature-input'], /"@path" "content-type" "signature-agent";key="sig1"\)/)
  t.ok(await verifyRequest(asRequest('POST', '/task', { ...covered, 'content-type': 'application/json' }), opts(now)))
  await t.rejects(verifyRequest(asRequest('POST', '/task', { ...covered, 'content-type': 'text/plain' }), opts(now)), { code: 'AOG_SIGNATURE_INVALID', detail: 'signature does not verify' })
  // A validity longer than the gate allows is refused by the gate, not by the signer.
  const long = signRequest({ method: 'GET', authority: AUTHORITY, target: '/' }, { key, now, validitySeconds: 600 })
  await t.rejects(verifyRequest(asRequest('GET', '/', { ...long }), opts(now)), { code: 'AOG_SIGNATURE_INVALID', detail: 'expires - created exceeds 300 s' })
})

t.test('web-bot-auth (independent) verifies what this signer makes, and signs what the gate accepts', async (t) => {
  const jwk = pub.export({ format: 'jwk' })
  const verifier = await verifierFromJWK(jwk)
  const h = signRequest({ method: 'GET', authority: AUTHORITY, target: '/challenge' }, { key, directoryUrl: DIR, signatureAgentForm: 'string' })
  // web-bot-auth 0.1.3 reads Signature-Agent only as the older bare string (not as a dictionary member).
  await t.resolves(wbaVerify({ method: 'GET', url: `https://${AUTHORITY}/challenge`, headers: { ...h } }, verifier), 'the older Signature-Agent form')
  const noAgent = signRequest({ method: 'GET', authority: AUTHORITY, target: '/challenge' }, { key })
  await t.resolves(wbaVerify({ method: 'GET', url: `https://${AUTHORITY}/challenge`, headers: { ...noAgent } }, verifier), 'no Signature-Agent')
  await t.rejects(wbaVerify({ method: 'GET', url: 'https://other.example/challenge', headers: { ...noAgent } }, verifier), 'another host fails there too')

  // The other way: web-bot-auth signs (WebCrypto), the gate verifies.
  const signer = await signerFromJWK(key.export({ format: 'jwk' }))
  t.equal(signer.keyid, KEYID, 'web-bot-auth computes the same RFC 7638 keyid')
  const now = new Date()
  const sent = await signatureHeaders({ method: 'POST', url: `https://${AUTHORITY}/task?x=1`, headers: { 'signature-agent': `"${DIR}"` } }, signer, {
    created: now,
    expires: new Date(now.getTime() + 60_000),
    components: ['@method', '@authority', '@path', 'signature-agent'],
  })
  const req = asRequest('POST', '/task?x=1', { 'signature-agent': `"${DIR}"`, 'signature-input': sent['Signature-Input'], signature: sent.Signature })
  t.match(await verifyRequest(req, opts(now.getTime())), { keyid: KEYID, directory: DIR })
  // Its defaults cover only @authority (and signature-agent): section 8 refuses that.
  const dflt = await signatureHeaders({ method: 'GET', url: `https://${AUTHORITY}/`, headers: {} }, signer, { created: now, expires: new Date(now.getTime() + 60_000) })
  await t.rejects(verifyRequest(asRequest('GET', '/', { 'signature-input': dflt['Signature-Input'], signature: dflt.Signature }), opts(now.getTime())), { code: 'AOG_SIGNATURE_INVALID', detail: 'signature does not cover @method' })
})

t.test('http-message-signatures (independent) verifies what this signer makes, in both Signature-Agent forms', async (t) => {
  const now = Date.now()
  for (const form of ['dictionary', 'string'] as const) {
    const h = signRequest({ method: 'PUT', authority: AUTHORITY, target: '/x/y?z' }, { key, directoryUrl: DIR, signatureAgentForm: form, now })
    const keyLookup = async (p: { keyid?: string }): Promise<{ id: string, algs: string[], verify: ReturnType<typeof createVerifier> } | null> =>
      p.keyid === KEYID ? { id: KEYID, algs: ['ed25519'], verify: createVerifier(pub, 'ed25519') } : null
    const ok = await httpbis.verifyMessage({ keyLookup, requiredParams: ['created', 'expires', 'nonce', 'keyid', 'tag'], requiredFields: ['@method', '@authority', '@path', 'signature-agent'] }, {
      method: 'PUT', url: `https://${AUTHORITY}/x/y?z`, headers: { ...h } as Record<string, string>,
    })
    t.equal(ok, true, form)
    const bad = await httpbis.verifyMessage({ keyLookup }, { method: 'PUT', url: `https://${AUTHORITY}/x/other`, headers: { ...h } as Record<string, string> })
    t.equal(bad, false, `${form}: another path does not verify there either`)
  }
})

t.test('options it refuses', async (t) => {
  const r = { method: 'GET', authority: AUTHORITY, target: '/' }
  t.throws(() => signRequest(r, { key: pub }), /the key must be an Ed25519 private key/)
  t.throws(() => signRequest(r, { key: keyPair('ec', { namedCurve: 'P-256' }).privateKey }), /the key must be an Ed25519 private key/)
  t.throws(() => signRequest(r, { key, label: 'Sig1' }), /the label must be a structured-field key/)
  t.throws(() => signRequest(r, { key, validitySeconds: 0 }), /validitySeconds must be a positive integer/)
  t.throws(() => signRequest(r, { key, validitySeconds: 1.5 }), /validitySeconds must be a positive integer/)
  t.throws(() => signRequest(r, { key, cover: ['x-missing'] }), /x-missing is to be covered but is not among the headers/)
  const k2: KeyObject = keyPair('ed25519').privateKey
  t.not(keyThumbprint(k2), KEYID)
})
