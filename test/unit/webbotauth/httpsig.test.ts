/**
 * The Web Bot Auth verifier (docs/protocol.md section 8, lib/webbotauth/httpsig.ts): RFC 9421
 * Appendix B signature bases and signatures byte for byte, the Web Bot Auth drafts' Ed25519 vectors
 * (both Signature-Agent forms), signatures made by an independent implementation
 * (http-message-signatures) accepted, and every check's refusal with its detail and Accept-Signature.
 */
import t, { type Test } from 'tap'
import { constants, createHmac, createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { runInNewContext } from 'node:vm'
import { parseDictionary, serializeDictionary, Token, type BareItem, type InnerList, type Item } from 'structured-headers'
import { createSigner, httpbis } from 'http-message-signatures'
import fc from 'fast-check'
import { calculateJwkThumbprint, type JWK } from 'jose'
import { AogError } from '../../../lib/errors.js'
import {
  ACCEPT_SIGNATURE, comparableAuthority, keyThumbprint, MAX_FIELD_LENGTH, normalizeAuthority, signatureBase, signatureError, verifyRequest,
  type KeyLookup, type SignedRequest, type VerifyOptions,
} from '../../../lib/webbotauth/httpsig.js'
import { ROOT } from '../../helpers/pki.js'
import { keyPair } from '../../helpers/keys.js'

const FIXTURES = join(ROOT, 'test', 'fixtures', 'webbotauth')
const rfc = JSON.parse(readFileSync(join(FIXTURES, 'rfc9421-appendix-b.json'), 'utf8')) as {
  keys: Record<string, JsonWebKey | string>
  request: SignedRequest
  vectors: Array<{ section: string, label: string, alg: string, key: string, signature_input: string, signature: string, base: string[] }>
}
const wba = JSON.parse(readFileSync(join(FIXTURES, 'web-bot-auth-architecture.json'), 'utf8')) as {
  key: JsonWebKey
  vectors: Array<{ version: string, target_url: string, label: string, signature: string, signature_input: string, signature_agent?: string, created_ms: number }>
}

/** The byte sequence of a `label=:…:` Signature value. */
function sigBytes (signature: string, label: string): Buffer {
  const member = parseDictionary(signature).get(label)!
  return Buffer.from(member[0] as ArrayBuffer)
}

t.test('RFC 9421 Appendix B.2: signature bases byte for byte, and the RFC signatures verify over them', async (t) => {
  for (const v of rfc.vectors) {
    const base = signatureBase(rfc.request, v.signature_input, v.label)
    t.equal(base, v.base.join('\n'), `${v.section}: the base`)
    const sig = sigBytes(v.signature, v.label)
    if (v.alg === 'ed25519') {
      const jwk = rfc.keys[v.key] as JsonWebKey
      t.ok(cryptoVerify(null, Buffer.from(base), createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x } as JsonWebKey, format: 'jwk' }), sig), `${v.section}: verifies`)
      // Ed25519 is deterministic: the RFC's private key signs the same bytes into the same signature.
      t.ok(cryptoSign(null, Buffer.from(base), createPrivateKey({ key: jwk, format: 'jwk' })).equals(sig), `${v.section}: re-signed identically`)
    } else if (v.alg === 'rsa-pss-sha512') {
      const key = createPublicKey({ key: rfc.keys[v.key] as JsonWebKey, format: 'jwk' })
      t.ok(cryptoVerify('sha512', Buffer.from(base), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 }, sig), `${v.section}: verifies`)
    } else {
      const mac = createHmac('sha256', Buffer.from(rfc.keys[v.key] as string, 'base64')).update(base).digest()
      t.ok(mac.equals(sig), `${v.section}: the HMAC matches`)
    }
  }
})

t.test('keyThumbprint is RFC 7638 (as jose computes it) for OKP, EC and RSA keys, public or private', async (t) => {
  for (const k of [
    keyPair('ed25519').privateKey,
    keyPair('ec', { namedCurve: 'P-256' }).privateKey,
    keyPair('rsa', { modulusLength: 1024 }).privateKey,
  ]) {
    const pub = createPublicKey(k)
    const expected = await calculateJwkThumbprint(pub.export({ format: 'jwk' }) as JWK, 'sha256')
    t.equal(keyThumbprint(pub), expected, k.asymmetricKeyType ?? '')
    t.equal(keyThumbprint(k), expected, `${k.asymmetricKeyType ?? ''} (private)`)
    t.equal(keyThumbprint(pub), expected, 'cached')
  }
})

t.test('RFC 9421 B.2.6 through verifyRequest: refused only for what the Web Bot Auth profile adds', async (t) => {
  const v = rfc.vectors.find((x) => x.section === 'B.2.6')!
  const req = { ...rfc.request, headers: { ...rfc.request.headers, 'signature-input': v.signature_input, signature: v.signature } }
  await t.rejects(verifyRequest(req, opts(1618884473_000, async () => undefined)), { code: 'AOG_SIGNATURE_INVALID', detail: 'no signature labelled with tag="web-bot-auth"' })
})

t.test('the Web Bot Auth drafts\' Ed25519 vectors: keyid is the key\'s thumbprint, bases verify in both Signature-Agent forms', async (t) => {
  const pub = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: wba.key.x } as JsonWebKey, format: 'jwk' })
  for (const v of wba.vectors) {
    const u = new URL(v.target_url)
    const req: SignedRequest = { method: 'GET', scheme: 'https', authority: u.host, target: u.pathname, headers: v.signature_agent === undefined ? {} : { 'signature-agent': v.signature_agent } }
    const base = signatureBase(req, v.signature_input, v.label)
    t.ok(cryptoVerify(null, Buffer.from(base), pub, sigBytes(v.signature, v.label)), `${v.version} ${v.label}`)
    const keyid = (parseDictionary(v.signature_input).get(v.label) as InnerList)[1].get('keyid')
    t.equal(keyid, keyThumbprint(pub))
    // The drafts' examples cover only @authority: section 8 also requires @method and @path.
    const full = { ...req, headers: { ...req.headers, 'signature-input': v.signature_input, signature: v.signature } }
    await t.rejects(verifyRequest(full, opts(v.created_ms, async () => pub)), { code: 'AOG_SIGNATURE_INVALID', detail: 'signature does not cover @method' })
  }
})

// ---- A signer for the tests: any components and parameters, over the verifier's own base builder
// (proven above against the RFC and below against an independent signer).

const NOW = 1_780_000_000_000
const DIR = 'https://agent.example'
const AUTHORITY = 'gate.example:8443'

function ed (): KeyObject { return keyPair('ed25519').privateKey }
const agentKey = ed()
const agentPub = createPublicKey(agentKey)
const KEYID = keyThumbprint(agentPub)

interface MakeOptions {
  key?: KeyObject
  label?: string
  components?: Item[]
  params?: Record<string, BareItem | undefined>
  /** `params` serialized before the named parameters (which then win over them), not after. */
  extraFirst?: boolean
  /** Signature-Agent header (undefined: the dictionary form naming DIR; null: none). */
  agent?: string | null
  /** Extra headers, sent and available to cover. */
  headers?: Record<string, string>
  method?: string
  target?: string
  authority?: string
}

const c = (name: string, params: Record<string, BareItem> = {}): Item => [name, new Map(Object.entries(params))]
const STD = [c('@method'), c('@authority'), c('@path'), c('signature-agent', { key: 'sig1' })]

function make (o: MakeOptions = {}): SignedRequest {
  const label = o.label ?? 'sig1'
  const agent = o.agent === null ? undefined : o.agent ?? `sig1="${DIR}"`
  const headers: Record<string, string> = { ...o.headers, ...(agent === undefined ? {} : { 'signature-agent': agent }) }
  const named: Record<string, BareItem | undefined> = {
    created: Math.floor(NOW / 1000) - 1,
    expires: Math.floor(NOW / 1000) + 59,
    keyid: keyThumbprint(o.key ?? agentKey),
    alg: 'ed25519',
    nonce: 'n-0123456789abcdef',
    tag: 'web-bot-auth',
  }
  const base: Record<string, BareItem | undefined> = o.extraFirst === true ? { ...o.params, ...named } : { ...named, ...o.params }
  const params = new Map(Object.entries(base).filter((e): e is [string, BareItem] => e[1] !== undefined))
  const input = serializeDictionary(new Map([[label, [o.components ?? (agent === undefined ? STD.slice(0, 3) : STD), params]]]))
  const req: SignedRequest = { method: o.method ?? 'GET', authority: o.authority ?? AUTHORITY, target: o.target ?? '/challenge', scheme: 'https', headers }
  let sig: Buffer
  try {
    sig = cryptoSign(null, Buffer.from(signatureBase(req, input, label)), o.key ?? agentKey)
  } catch {
    // A request the verifier refuses before the signature: any 64 bytes will do.
    sig = Buffer.alloc(64)
  }
  return { ...req, headers: { ...headers, 'signature-input': input, signature: serializeDictionary(new Map([[label, [sig, new Map()]]])) } }
}

function resolver (keys: KeyObject[] = [agentPub], dir = DIR): VerifyOptions['resolveKey'] {
  return async (url, keyid) => {
    if (url !== undefined && url !== dir) return 'unknown-directory'
    return keys.find((k) => keyThumbprint(k) === keyid)
  }
}

function opts (now = NOW, resolveKey: VerifyOptions['resolveKey'] = resolver(), more: Partial<VerifyOptions> = {}): VerifyOptions {
  return { now, skewSeconds: 30, maxValiditySeconds: 300, resolveKey, ...more }
}

/** Refused with 401 AOG_SIGNATURE_INVALID, `detail`, and Accept-Signature. */
async function refused (t: Test, req: SignedRequest, detail: string | RegExp, o: VerifyOptions = opts()): Promise<void> {
  await t.rejects(verifyRequest(req, o), { code: 'AOG_SIGNATURE_INVALID', status: 401, detail, headers: { 'accept-signature': ACCEPT_SIGNATURE } }, typeof detail === 'string' ? detail : detail.source)
}

t.test('a good signature: the identity, nonce and expiry the caller needs', async (t) => {
  const v = await verifyRequest(make(), opts())
  t.same(v, {
    label: 'sig1',
    keyid: KEYID,
    thumbprintHex: Buffer.from(KEYID, 'base64url').toString('hex'),
    nonce: 'n-0123456789abcdef',
    created: (Math.floor(NOW / 1000) - 1) * 1000,
    expires: (Math.floor(NOW / 1000) + 59) * 1000,
    directory: DIR,
  })
  t.match(v.thumbprintHex, /^[0-9a-f]{64}$/)
  // F is a getter shared by every result, not one of its own (a getter made per call kept part of
  // the call's parse alive with each result: docs/decisions/signature-cost.md).
  t.equal(Object.getOwnPropertyDescriptor(v, 'thumbprintHex'), undefined, 'no accessor of its own')
  // The older bare-string Signature-Agent, covered as a whole.
  const legacy = await verifyRequest(make({ agent: `"${DIR}"`, components: [...STD.slice(0, 3), c('signature-agent')] }), opts())
  t.equal(legacy.directory, DIR)
  // A dictionary of one member, covered as a whole.
  t.equal((await verifyRequest(make({ components: [...STD.slice(0, 3), c('signature-agent')] }), opts())).directory, DIR)
  // No Signature-Agent: the key is looked up in every allowed directory.
  let asked: string | undefined = 'unset'
  const none = await verifyRequest(make({ agent: null }), opts(NOW, async (url, keyid) => { asked = url; return keyid === KEYID ? agentPub : undefined }))
  t.equal(asked, undefined)
  t.equal(none.directory, undefined)
  t.notOk('directory' in none)
  // @target-uri stands for @authority; more components, a query, another label, alg absent.
  const wide = make({
    label: 'agent-sig',
    target: '/challenge?x=1&y=2',
    headers: { 'content-type': 'application/json', accept: 'a', 'x-multi': 'b' },
    params: { alg: undefined },
    components: [c('@target-uri'), c('@method'), c('@path'), c('@query'), c('@scheme'), c('@request-target'), c('content-type'), c('signature-agent', { key: 'sig1' })],
  })
  t.equal((await verifyRequest(wide, opts())).label, 'agent-sig')
  // Repeated header lines are combined with ", " (node gives set-cookie-like fields as arrays).
  const multi = make({ headers: { 'x-list': 'a, b' }, components: [...STD, c('x-list')] })
  t.ok(await verifyRequest({ ...multi, headers: { ...multi.headers, 'x-list': ['a ', ' b'] } }, opts()))
  // The authority is compared normalized: case and the default port.
  t.equal(normalizeAuthority('Gate.Example:443', 'https'), 'gate.example')
  t.equal(normalizeAuthority('gate.example:80', 'http'), 'gate.example')
  t.equal(normalizeAuthority('gate.example:443', 'http'), 'gate.example:443')
  const upper = make({ authority: 'gate.example' })
  t.ok(await verifyRequest({ ...upper, authority: 'GATE.example:443' }, opts(NOW, resolver(), { authorities: ['gate.example'] })))
  // created within the skew in the future is accepted.
  t.ok(await verifyRequest(make({ params: { created: Math.floor(NOW / 1000) + 30, expires: Math.floor(NOW / 1000) + 90 } }), opts()))
})

t.test('a property: whatever extra parameters a signature has, verifyRequest verifies the base signatureBase builds (a canonical field\'s own text, or the inner list serialized)', async (t) => {
  const NAMED = new Set(['created', 'expires', 'keyid', 'alg', 'nonce', 'tag'])
  const name = fc.stringMatching(/^[a-z*][a-z0-9_\-.*]{0,8}$/).filter((k) => !NAMED.has(k))
  const value: fc.Arbitrary<BareItem> = fc.oneof(
    fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((x) => String.fromCharCode(x)), maxLength: 16 }),
    fc.integer({ min: -999_999_999_999_999, max: 999_999_999_999_999 }),
    fc.uint8Array({ maxLength: 24 }).map((u) => new Uint8Array(u).buffer),
    fc.constant(true),
    // Left to structured-headers (not canonical-dictionary.ts's subset): the serialized path.
    fc.stringMatching(/^[a-zA-Z*][a-zA-Z0-9:/!#$%&'*+\-.^_`|~]{0,8}$/).map((x) => new Token(x)),
    fc.integer({ min: -99_999_999, max: 99_999_999 }).filter((n) => n % 1000 !== 0).map((n) => n / 1000)
  )
  let canonical = 0
  await fc.assert(fc.asyncProperty(fc.uniqueArray(fc.tuple(name, value), { selector: (e) => e[0], maxLength: 4 }), fc.boolean(), async (extra, first) => {
    const req = make({ params: Object.fromEntries(extra), extraFirst: first })
    if (!extra.some(([, v]) => v instanceof Token || (typeof v === 'number' && !Number.isInteger(v)))) canonical++
    await verifyRequest(req, opts())
    return true
  }), { numRuns: 400 })
  t.ok(canonical > 50, `canonical fields among them (${canonical})`)
})

t.test('signatureError: the caller\'s own refusals carry the same code and Accept-Signature', async (t) => {
  t.match(signatureError('nonce already used'), { code: 'AOG_SIGNATURE_INVALID', status: 401, detail: 'nonce already used', headers: { 'accept-signature': ACCEPT_SIGNATURE } })
  // The Accept-Signature value is a valid dictionary naming the required components, tag and nonce.
  const il = parseDictionary(ACCEPT_SIGNATURE).get('sig1') as InnerList
  t.same(il[0].map(([n]) => n), ['@method', '@authority', '@path'])
  t.same(Object.fromEntries(il[1]), { created: true, expires: true, nonce: true, alg: 'ed25519', tag: 'web-bot-auth' })
})

t.test('two signatures, only one with the tag: the tagged one is verified, the other ignored', async (t) => {
  const good = make()
  const input = `other=("@method");created=1;keyid="proxy", ${good.headers['signature-input'] as string}`
  const sig = `other=:AAAA:, ${good.headers.signature as string}`
  t.equal((await verifyRequest({ ...good, headers: { ...good.headers, 'signature-input': input, signature: sig } }, opts())).label, 'sig1')
  // Node joins repeated Signature-Input lines: as an array they are combined the same way.
  t.ok(await verifyRequest({ ...good, headers: { ...good.headers, 'signature-input': ['other=("@method")', good.headers['signature-input'] as string], signature: sig } }, opts()))
})

t.test('refusals, in the order of section 8, each naming its check', async (t) => {
  const sec = Math.floor(NOW / 1000)
  await t.test('headers missing', async (t) => {
    const g = make()
    await refused(t, { ...g, headers: { ...g.headers, 'signature-input': undefined } }, 'Signature-Input header missing')
    await refused(t, { ...g, headers: { ...g.headers, signature: [] } }, 'Signature header missing')
  })
  await t.test('the tag', async (t) => {
    await refused(t, make({ params: { tag: undefined } }), 'no signature labelled with tag="web-bot-auth"')
    await refused(t, make({ params: { tag: 'web-bot-auth-2' } }), 'no signature labelled with tag="web-bot-auth"')
    const g = make()
    const two = `${g.headers['signature-input'] as string}, sig2=${(g.headers['signature-input'] as string).slice(5)}`
    await refused(t, { ...g, headers: { ...g.headers, 'signature-input': two } }, 'more than one signature labelled with tag="web-bot-auth"')
    await refused(t, { ...g, headers: { ...g.headers, 'signature-input': 'sig1;tag="web-bot-auth"' } }, 'Signature-Input member sig1 is not an inner list')
    await refused(t, { ...g, headers: { ...g.headers, signature: 'sig2=:AAAA:' } }, 'Signature has no member labelled sig1')
    await refused(t, { ...g, headers: { ...g.headers, signature: 'sig1="AAAA"' } }, 'Signature member sig1 is not a byte sequence')
    await refused(t, { ...g, headers: { ...g.headers, signature: 'sig1=(:AAAA:)' } }, 'Signature member sig1 is not a byte sequence')
  })
  await t.test('what it covers', async (t) => {
    await refused(t, make({ components: [c('@method'), c('@path'), c('signature-agent', { key: 'sig1' })] }), 'signature does not cover @authority')
    await refused(t, make({ components: [c('@authority'), c('@path'), c('signature-agent', { key: 'sig1' })] }), 'signature does not cover @method')
    // Twice: a list of components is validated once per items array, and a refusal is not kept.
    for (let i = 0; i < 2; i++) await refused(t, make({ components: [c('@authority'), c('@method'), c('signature-agent', { key: 'sig1' })] }), 'signature does not cover @path')
    await refused(t, make({ components: STD.slice(0, 3) }), 'signature does not cover signature-agent')
    await refused(t, make({ components: [...STD, c('@method')] }), 'signature covers @method twice')
    await refused(t, make({ components: [...STD, c('content-type')] }), 'signature covers content-type, which the request does not have')
    await refused(t, make({ components: [...STD, c('@status')] }), 'component @status is not supported')
    await refused(t, make({ components: [...STD, c('@query-param', { name: 'x' })] }), 'component @query-param is not supported')
    await refused(t, make({ components: [...STD, c('@query', { req: true })] }), 'component @query takes no parameter here')
    await refused(t, make({ components: [...STD, c('Content-Type')], headers: { 'content-type': 'x' } }), 'a covered component is not a lowercase field name')
    await refused(t, make({ components: [...STD, c('content-type', { bs: true })], headers: { 'content-type': 'x' } }), 'component parameter bs is not supported (only key)')
    await refused(t, make({ components: [...STD, c('content-type', { key: 1 })], headers: { 'content-type': 'x' } }), 'the key parameter of content-type is not a string')
    const g = make()
    await refused(t, { ...g, headers: { ...g.headers, 'signature-input': 'sig1=(1 "@method");tag="web-bot-auth"' } }, 'a covered component is not a string')
    const many = Array.from({ length: 33 }, (_, i) => c(`x-${i}`))
    await refused(t, { ...g, headers: { ...g.headers, 'signature-input': serializeDictionary(new Map([['sig1', [many, new Map([['tag', 'web-bot-auth']])]]])) } }, 'signature covers more than 32 components')
  })
  await t.test('the gate\'s own host', async (t) => {
    const o = opts(NOW, resolver(), { authorities: ['gate.example:8443'] })
    await refused(t, make({ authority: 'other.example' }), 'signature is for another host: @authority is not this gate', o)
    t.ok(await verifyRequest(make(), o))
  })
  await t.test('the Signature-Agent member', async (t) => {
    await refused(t, make({ agent: `a="${DIR}", b="https://b.example"`, components: [...STD.slice(0, 3), c('signature-agent')] }), 'Signature-Agent names several directories: cover one member with ;key=')
    await refused(t, make({ agent: `a="${DIR}"` }), 'Signature-Agent has no member named by the covered key')
    await refused(t, make({ agent: `sig1="${DIR}";type=jwks_uri` }), 'Signature-Agent type is not supported (only directory)')
    t.ok(await verifyRequest(make({ agent: `sig1="${DIR}";type=directory` }), opts()))
    await refused(t, make({ agent: 'sig1=agent' }), 'a Signature-Agent member is not a string')
    await refused(t, make({ agent: `"${DIR}"` }), 'Signature-Agent is not a dictionary, yet the signature covers a member of it')
    await refused(t, make({ agent: '"x" y', components: [...STD.slice(0, 3), c('signature-agent')] }), 'Signature-Agent is not a valid structured field (RFC 8941)')
    await refused(t, make({ agent: '?1', components: [...STD.slice(0, 3), c('signature-agent')] }), /Signature-Agent is not a valid structured dictionary/)
    await refused(t, make({ agent: `sig1="${DIR}", sig1="https://evil.example"`, components: [...STD.slice(0, 3), c('signature-agent')] }), 'Signature-Agent repeats a label')
    await refused(t, make({ components: [...STD, c('signature-agent', { key: 'sig2' })], agent: `sig1="${DIR}", sig2="${DIR}"` }), 'signature covers signature-agent twice')
  })
  await t.test('created and the validity', async (t) => {
    await refused(t, make({ params: { created: undefined } }), 'created missing')
    await refused(t, make({ params: { created: 1.5 } }), 'created is not an integer')
    await refused(t, make({ params: { expires: 'soon' } }), 'expires is not an integer')
    await refused(t, make({ params: { expires: undefined } }), 'expires missing')
    await refused(t, make({ params: { created: sec + 31, expires: sec + 60 } }), 'created is in the future')
    await refused(t, make({ params: { created: sec - 10, expires: sec - 10 } }), 'expires is not after created')
    await refused(t, make({ params: { created: sec - 1, expires: sec + 300 } }), 'expires - created exceeds 300 s')
    t.ok(await verifyRequest(make({ params: { created: sec - 1, expires: sec + 299 } }), opts()))
  })
  await t.test('expiry: refused from `expires` on', async (t) => {
    const g = make()
    await refused(t, g, 'signature expired', opts(NOW + 59_000 - (NOW % 1000)))
    await refused(t, g, 'signature expired', opts(NOW + 3_600_000))
    t.ok(await verifyRequest(g, opts(NOW + 58_999 - (NOW % 1000))))
  })
  await t.test('the nonce', async (t) => {
    await refused(t, make({ params: { nonce: undefined } }), 'nonce missing')
    await refused(t, make({ params: { nonce: '' } }), 'nonce missing')
    await refused(t, make({ params: { nonce: 7 } }), 'nonce is not a string')
    await refused(t, make({ params: { nonce: 'x'.repeat(257) } }), 'nonce is longer than 256 characters')
  })
  await t.test('the key and its directory', async (t) => {
    await refused(t, make({ params: { keyid: undefined } }), 'keyid missing')
    await refused(t, make({ params: { keyid: 'test-key-ed25519' } }), 'keyid is not an RFC 7638 JWK thumbprint (SHA-256, base64url)')
    await refused(t, make({ params: { keyid: `${KEYID.slice(0, 42)}B` } }), 'keyid is not an RFC 7638 JWK thumbprint (SHA-256, base64url)')
    await refused(t, make({ params: { alg: 'rsa-pss-sha512' } }), 'alg is not supported (only "ed25519")')
    await refused(t, make({ agent: 'sig1="https://unknown.example"' }), 'the directory named by Signature-Agent is not allowed')
    await refused(t, make({ key: ed() }), 'keyid not in the directory named by Signature-Agent')
    await refused(t, make({ key: ed(), agent: null }), 'keyid not in any allowed directory')
    // The resolver answers with another key than the keyid's (a broken directory): refused.
    await refused(t, make(), 'keyid is not the thumbprint of the directory key', opts(NOW, async () => createPublicKey(ed())))
    const rsa = keyPair('rsa', { modulusLength: 1024 }).publicKey
    await refused(t, make(), 'the key is not an Ed25519 key (only ed25519 is supported)', opts(NOW, async () => rsa))
  })
  await t.test('no keys for the directory: 503 with Retry-After, never an accept', async (t) => {
    await t.rejects(verifyRequest(make(), opts(NOW, async () => 'no-keys' as KeyLookup)), { code: 'AOG_UNAVAILABLE', status: 503, retryAfter: 30, headers: { 'accept-signature': ACCEPT_SIGNATURE } })
    await t.rejects(verifyRequest(make(), opts(NOW, async () => 'no-keys' as KeyLookup, { retryAfterSeconds: 5 })), { code: 'AOG_UNAVAILABLE', retryAfter: 5 })
    const err = await verifyRequest(make(), opts(NOW, async () => { throw new Error('ECONNRESET') })).catch((e: unknown) => e) as AogError
    t.match(err, { code: 'AOG_UNAVAILABLE', detail: 'the key directory could not be read' })
    t.match((err.cause as Error).message, 'ECONNRESET', 'the cause is kept for the log')
    const own = new AogError('AOG_OVERLOADED', 'busy')
    await t.rejects(verifyRequest(make(), opts(NOW, async () => { throw own })), own, 'an AogError of the resolver passes through')
    // A resolver may answer now, or with any thenable (a promise of another realm, a plain thenable).
    const sync: VerifyOptions['resolveKey'] = (_url, keyid) => keyid === KEYID ? agentPub : undefined
    t.ok(await verifyRequest(make(), opts(NOW, sync)), 'a key known now')
    t.ok(await verifyRequest(make(), opts(NOW, () => ({ then: (ok: (k: KeyLookup) => void) => { ok(agentPub) } }) as unknown as Promise<KeyLookup>)), 'a plain thenable')
    t.ok(await verifyRequest(make(), opts(NOW, () => runInNewContext('Promise.resolve(k)', { k: agentPub }) as Promise<KeyLookup>)), 'a promise of another realm')
    await t.rejects(verifyRequest(make(), opts(NOW, () => runInNewContext('Promise.reject(new Error("down"))') as Promise<KeyLookup>)), { code: 'AOG_UNAVAILABLE', detail: 'the key directory could not be read' }, 'rejected in another realm: 503')
    await t.rejects(verifyRequest(make(), opts(NOW, () => { throw new Error('sync') })), { code: 'AOG_UNAVAILABLE', detail: 'the key directory could not be read' }, 'a resolver that throws at once: 503')
    await t.rejects(verifyRequest(make(), opts(NOW, () => 'no-keys')), { code: 'AOG_UNAVAILABLE', status: 503 }, 'no keys, answered now')
  })
  await t.test('the signature itself', async (t) => {
    const g = make()
    await refused(t, { ...g, target: '/challenge/x' }, 'signature does not verify')
    // The query is not among the required components: a signature without @query holds for any.
    t.ok(await verifyRequest({ ...g, target: '/challenge?x' }, opts()))
    await refused(t, { ...g, method: 'POST' }, 'signature does not verify')
    await refused(t, { ...g, authority: 'gate.example:8444' }, 'signature does not verify')
    await refused(t, { ...g, headers: { ...g.headers, 'signature-agent': 'sig1="https://agent.example/other"' } }, 'the directory named by Signature-Agent is not allowed')
    // Another key of the same directory, claimed under this keyid.
    const other = make({ key: ed() })
    await refused(t, { ...g, headers: { ...g.headers, signature: other.headers.signature } }, 'signature does not verify')
    await refused(t, { ...g, headers: { ...g.headers, signature: 'sig1=:AAAA:' } }, 'signature does not verify')
    // The parameters are signed: a longer validity written into the header breaks the signature.
    const input = (g.headers['signature-input'] as string).replace(/expires=\d+/, `expires=${sec + 200}`)
    await refused(t, { ...g, headers: { ...g.headers, 'signature-input': input } }, 'signature does not verify')
    // Nothing but the tagged signature's own bytes count: a changed untagged neighbour is harmless.
    t.ok(await verifyRequest({ ...g, headers: { ...g.headers, 'signature-input': `${g.headers['signature-input'] as string}, x=()`, signature: `${g.headers.signature as string}, x=:AA==:` } }, opts()))
  })
})

t.test('malformed structured fields, repeated labels, oversized fields, unsafe bytes', async (t) => {
  const g = make()
  const h = g.headers
  await refused(t, { ...g, headers: { ...h, 'signature-input': 'sig1=("@method"' } }, 'Signature-Input is not a valid structured dictionary (RFC 8941)')
  await refused(t, { ...g, headers: { ...h, 'signature-input': 'Sig1=()' } }, 'Signature-Input is not a valid structured dictionary (RFC 8941)')
  await refused(t, { ...g, headers: { ...h, signature: 'sig1=:not base64!:' } }, 'Signature is not a valid structured dictionary (RFC 8941)')
  await refused(t, { ...g, headers: { ...h, 'signature-input': `${h['signature-input'] as string}, sig1=()` } }, 'Signature-Input repeats a label')
  await refused(t, { ...g, headers: { ...h, 'signature-input': [h['signature-input'] as string, h['signature-input'] as string] } }, 'Signature-Input repeats a label')
  await refused(t, { ...g, headers: { ...h, signature: `${h.signature as string}, sig1=:AAAA:` } }, 'Signature repeats a label')
  t.ok(await verifyRequest({ ...g, headers: { ...h, 'signature-input': `${h['signature-input'] as string}, x=("a,\\"b)" "c");p="(,"` } }, opts()), 'commas, quotes and parentheses inside strings are not members')
  const big = `${h['signature-input'] as string}, x=("${'a'.repeat(MAX_FIELD_LENGTH)}")`
  await refused(t, { ...g, headers: { ...h, 'signature-input': big } }, `Signature-Input exceeds ${MAX_FIELD_LENGTH} characters`)
  await refused(t, { ...g, headers: { ...h, signature: `${h.signature as string}, x=:${'A'.repeat(MAX_FIELD_LENGTH)}:` } }, `Signature exceeds ${MAX_FIELD_LENGTH} characters`)
  await refused(t, make({ agent: `sig1="${DIR}", x="${'a'.repeat(MAX_FIELD_LENGTH)}"` }), `Signature-Agent exceeds ${MAX_FIELD_LENGTH} characters`)
  await refused(t, make({ agent: `"${'a'.repeat(MAX_FIELD_LENGTH)}"`, components: [...STD.slice(0, 3), c('signature-agent')] }), `Signature-Agent exceeds ${MAX_FIELD_LENGTH} characters`)
  // A value that would forge a line of the base, or bytes the base cannot hold.
  const withA = make({ components: [...STD, c('x-a')], headers: { 'x-a': 'v' } })
  await refused(t, { ...withA, headers: { ...withA.headers, 'x-a': 'v\n"@method": GET' } }, 'x-a has a character a signature base cannot hold')
  await refused(t, { ...withA, headers: { ...withA.headers, 'x-a': 'caf\u00e9' } }, 'x-a has a character a signature base cannot hold')
  await refused(t, { ...g, target: 'https://gate.example:8443/challenge' }, 'the request target is not in origin form')
  await refused(t, { ...g, authority: '' }, 'the request has no @authority')
  // Covered dictionary members of other fields.
  const dict = make({ headers: { 'x-d': 'a=1, b=(2 3)' }, components: [...STD, c('x-d', { key: 'b' })] })
  t.equal(signatureBase(dict, dict.headers['signature-input'] as string, 'sig1').split('\n')[4], '"x-d";key="b": (2 3)')
  t.ok(await verifyRequest(dict, opts()))
  await refused(t, { ...dict, headers: { ...dict.headers, 'x-d': 'a=1' } }, 'x-d has no member named by the covered key')
  await refused(t, { ...dict, headers: { ...dict.headers, 'x-d': '"not a dict"' } }, 'x-d is not a valid structured dictionary (RFC 8941)')
  t.throws(() => signatureBase(g, h['signature-input'] as string, 'nope'), { code: 'AOG_SIGNATURE_INVALID', detail: 'Signature-Input has no inner list labelled nope' })
})

t.test('a property: altered or random Signature-Input, Signature and Signature-Agent values are refused with 401, never another error, and accepted only when the signed bytes are unchanged', async (t) => {
  const good = make()
  const goodBase = signatureBase(good, good.headers['signature-input'] as string, 'sig1')
  const sfChars = fc.constantFrom(...'abcsig1=();:"\\, -*@.?/+!0123456789'.split(''))
  const sfText = fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: sfChars, maxLength: 120 }), fc.string({ unit: 'binary', maxLength: 40 }))
  const mutate = (s: string): fc.Arbitrary<string> => fc.tuple(fc.nat(s.length), fc.nat(8), sfText).map(([i, n, ins]) => s.slice(0, i) + ins + s.slice(i + n))
  const input = good.headers['signature-input'] as string
  const sig = good.headers.signature as string
  const agent = good.headers['signature-agent'] as string
  let runs = 0
  let unchanged = 0
  await fc.assert(fc.asyncProperty(
    fc.oneof(sfText, mutate(input), fc.constant(input)),
    fc.oneof(sfText, mutate(sig), fc.constant(sig)),
    fc.oneof(sfText, mutate(agent), fc.constant(agent), fc.constant(undefined)),
    async (i, s, a) => {
      if (i === input && s === sig && a === agent) return true
      runs++
      const req = { ...good, headers: { 'signature-input': i, signature: s, ...(a === undefined ? {} : { 'signature-agent': a }) } }
      try {
        await verifyRequest(req, opts())
      } catch (err) {
        return err instanceof AogError && err.code === 'AOG_SIGNATURE_INVALID' && err.headers['accept-signature'] === ACCEPT_SIGNATURE
      }
      // Accepted: only an alteration outside the signed bytes (e.g. another Signature-Agent member
      // than the covered one, or whitespace the serialization drops) may be.
      unchanged++
      return signatureBase(req, i, 'sig1') === goodBase
    }
  ), { numRuns: 10_000 })
  t.ok(runs > 9000, `${runs} malformed or altered requests: ${runs - unchanged} refused with 401, ${unchanged} accepted over unchanged signed bytes`)
})

t.test('an independent signer (http-message-signatures) is accepted, in both Signature-Agent forms', async (t) => {
  const now = Date.now()
  for (const form of ['dictionary', 'string'] as const) {
    const agentHeader = form === 'dictionary' ? `sig1="${DIR}"` : `"${DIR}"`
    const agentField = form === 'dictionary' ? '"signature-agent";key="sig1"' : 'signature-agent'
    const signed = await httpbis.signMessage({
      key: createSigner(agentKey, 'ed25519', KEYID),
      name: 'sig1',
      fields: ['@method', '@authority', '@path', '@query', agentField],
      params: ['created', 'expires', 'keyid', 'alg', 'nonce', 'tag'],
      paramValues: { created: new Date(now), expires: new Date(now + 60_000), nonce: 'independent-nonce-1', tag: 'web-bot-auth' },
    }, { method: 'POST', url: `https://${AUTHORITY}/task?x=1`, headers: { 'signature-agent': agentHeader } })
    const headers = Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), v]))
    const req: SignedRequest = { method: 'POST', authority: AUTHORITY, target: '/task?x=1', scheme: 'https', headers }
    const v = await verifyRequest(req, opts(now))
    t.match(v, { keyid: KEYID, nonce: 'independent-nonce-1', directory: DIR }, form)
    await refused(t, { ...req, target: '/task?x=2' }, 'signature does not verify', opts(now))
  }
})

t.test('what the parsed value does not show: a label repeated behind a display string, a whole decimal', async (t) => {
  const g = make()
  const h = g.headers
  const input = h['signature-input'] as string
  // In a display string (RFC 9651) a backslash is a character, not an escape: a member counter that
  // took it for one would stay "in a string" and miss the repeated sig1 (the parser keeps the last).
  const hidden = `x=%"\\", sig1=("@method");tag="web-bot-auth";nonce="first", ${input}, y=", , "`
  t.equal(parseDictionary(hidden).size, 3, 'the parser keeps one sig1')
  await refused(t, { ...g, headers: { ...h, 'signature-input': hidden } }, 'Signature-Input repeats a label')
  await refused(t, { ...g, headers: { ...h, signature: `x=%"\\", sig1=:AAAA:, ${h.signature as string}, y=", , "` } }, 'Signature repeats a label')
  await refused(t, make({ agent: `sig1=%"\\", sig1="${DIR}"` }), 'Signature-Agent repeats a label')
  t.ok(await verifyRequest({ ...g, headers: { ...h, 'signature-input': `${input}, x=%"a\\b, c", y=%"\\"` } }, opts()), 'display strings with a backslash and a comma are single members')

  // A whole decimal parses as the same number as the integer: the base would hold `1`, where another
  // verifier rebuilds `1.0`.
  await refused(t, { ...g, headers: { ...h, 'signature-input': input.replace(/created=(\d+)/, 'created=$1.0') } }, 'Signature-Input holds a decimal with no fraction (1.0): send an integer')
  await refused(t, { ...g, headers: { ...h, 'signature-input': input.replace(/expires=(\d+)/, 'expires=$1.000') } }, 'Signature-Input holds a decimal with no fraction (1.0): send an integer')
  await refused(t, { ...g, headers: { ...h, 'signature-input': input.replace(/created=(\d+)/, 'created=$1.5') } }, 'created is not an integer')
  await refused(t, { ...g, headers: { ...h, 'signature-input': `${input}, x=();p=-7.0` } }, 'Signature-Input holds a decimal with no fraction (1.0): send an integer')
  const dict = make({ headers: { 'x-d': 'a=1.5, b=(-2.5 3)' }, components: [...STD, c('x-d', { key: 'a' })] })
  t.ok(await verifyRequest(dict, opts()), 'decimals with a fraction in a covered dictionary')
  await refused(t, { ...dict, headers: { ...dict.headers, 'x-d': 'a=1.5, b=(-2.0 3)' } }, 'x-d holds a decimal with no fraction (1.0): send an integer')
  await refused(t, { ...dict, headers: { ...dict.headers, 'x-d': 'a=1.50, b=(3 4.00)' } }, 'x-d holds a decimal with no fraction (1.0): send an integer')
  // Not numbers: tokens, keys, byte sequences and dates with digits and dots.
  t.ok(await verifyRequest({ ...g, headers: { ...h, 'signature-input': `${input}, x=a1.0;k1.0=b.0, y=:AA==:, w=("1.0" t.0), z=@1` } }, opts()), 'digits and dots outside numbers')
})

t.test('a refusal shows at most 64 characters of a label or a field name from the request', async (t) => {
  const g = make()
  const long = `z${'a'.repeat(6000)}`
  const input = (g.headers['signature-input'] as string).replace(/^sig1=/, `${long}=`)
  await refused(t, { ...g, headers: { ...g.headers, 'signature-input': input } }, `Signature has no member labelled ${long.slice(0, 64)}…`)
  const field = `x-${'b'.repeat(6000)}`
  const covering = make({ components: [...STD, c(field)], headers: { [field]: 'v' } })
  const { [field]: _gone, ...without } = covering.headers
  await refused(t, { ...covering, headers: without }, `signature covers ${field.slice(0, 64)}…, which the request does not have`)
})

t.test('a parameter key repeated within one item is refused in every field (RFC 8941 keeps the last; another reader may take the first)', async (t) => {
  const g = make()
  const h = g.headers
  const input = h['signature-input'] as string
  // Signed as sent: the signature covers both nonces, so only the field's reading decides.
  const twoNonces = make({ params: { nonce: undefined } })
  const signedTwice = (twoNonces.headers['signature-input'] as string) + ';nonce="first";nonce="second"'
  await refused(t, { ...twoNonces, headers: { ...twoNonces.headers, 'signature-input': signedTwice } }, 'Signature-Input repeats a parameter')
  await refused(t, { ...g, headers: { ...h, 'signature-input': input.replace(/;expires=/, ';expires=1;expires=') } }, 'Signature-Input repeats a parameter')
  await refused(t, { ...g, headers: { ...h, 'signature-input': input.replace('"@method"', '"@method";key="a";key="b"') } }, 'Signature-Input repeats a parameter')
  await refused(t, { ...g, headers: { ...h, signature: `${h.signature as string};a;a` } }, 'Signature repeats a parameter')
  await refused(t, make({ agent: `sig1="${DIR}";type=directory;type=directory` }), 'Signature-Agent repeats a parameter')
  // The same key on different items, and `;` inside strings, are not repeats.
  t.ok(await verifyRequest({ ...g, headers: { ...h, 'signature-input': `${input}, x=("a";p=1 "b";p=2);p=3, y=("k;k=1;k=2");q="a;q=b", z=%";;"` } }, opts()), 'one key per item; semicolons in strings')
  // A repeated key where the canonical reader leaves the text to the library: refused there too.
  await refused(t, { ...g, headers: { ...h, 'signature-input': `${input},  x=();p;p` } }, 'Signature-Input repeats a parameter')
})

t.test('a covered field sent on several lines is their values joined by ", " (RFC 9421 section 2.1), also where node keeps only the first line or joins with "; "', async (t) => {
  for (const [name, lines] of [['user-agent', ['agent/1', 'extra']], ['cookie', ['a=1', 'b=2']], ['content-type', ['text/plain', 'x']], ['x-other', ['p', 'q']]] as const) {
    const signed = make({ headers: { [name]: lines.join(', ') }, components: [...STD, c(name)] })
    const raw = ['Host', AUTHORITY, name.toUpperCase(), ` ${lines[0]} `, name, lines[1]]
    // node's headers as it builds them: the first line only, cookie lines joined by "; ", others by ", ".
    const nodeValue = name === 'cookie' ? lines.join('; ') : name === 'x-other' ? lines.join(', ') : lines[0]
    const received = { ...signed, headers: { ...signed.headers, [name]: nodeValue }, rawHeaders: raw }
    t.ok(await verifyRequest(received, opts()), `${name}: the signature over both lines verifies`)
    const firstOnly = make({ headers: { [name]: lines[0] }, components: [...STD, c(name)] })
    await refused(t, { ...firstOnly, headers: { ...firstOnly.headers, [name]: nodeValue }, rawHeaders: raw }, 'signature does not verify')
  }
})

t.test('an IPv6 authority is compared with the gate\'s own in its canonical form; the base keeps it as sent', async (t) => {
  t.equal(comparableAuthority('[0:0:0:0:0:0:0:1]:8443'), '[::1]:8443')
  t.equal(comparableAuthority('[::FFFF:7F00:1]'), '[::ffff:7f00:1]')
  t.equal(comparableAuthority('[::1]:0099'), '[::1]:0099', 'the port as written')
  t.equal(comparableAuthority('gate.example:8443'), 'gate.example:8443')
  t.equal(comparableAuthority('[not-ipv6]:1'), '[not-ipv6]:1', 'not an address: left as it is, so it matches nothing')
  const o = opts(NOW, resolver(), { authorities: ['[::1]:8443'] })
  for (const authority of ['[::1]:8443', '[0:0:0:0:0:0:0:1]:8443', '[0::1]:8443']) {
    const req = make({ authority })
    t.ok(await verifyRequest(req, o), authority)
    t.match(signatureBase(req, req.headers['signature-input'] as string, 'sig1'), `"@authority": ${authority}\n`)
  }
  await refused(t, make({ authority: '[::2]:8443' }), 'signature is for another host: @authority is not this gate', o)
  await refused(t, make({ authority: '[::1]:8444' }), 'signature is for another host: @authority is not this gate', o)
})

t.test('no keys known without Signature-Agent: the 503 says so without naming a Signature-Agent', async (t) => {
  await t.rejects(verifyRequest(make({ agent: null }), opts(NOW, () => 'no-keys')), { code: 'AOG_UNAVAILABLE', status: 503, detail: 'no keys are known for an allowed directory, and the key is in none of the others' })
})
