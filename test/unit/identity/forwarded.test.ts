import t from 'tap'
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import fc from 'fast-check'
import { forwardedIdentity, readCertificates, signatureHeader } from '../../../lib/identity/forwarded.js'
import { AogError } from '../../../lib/errors.js'
import { mintCert, pem } from '../../helpers/pki.js'

interface SigVector { t: number, request_id: string, method: string, request_uri: string, client_verify: string, signature_header: string }
const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/forward-signature-v1.json', import.meta.url), 'utf8')) as {
  scheme: string, secret: string, client_cert_escaped: string, client_cert_pem: string, client_fingerprint: string, vectors: SigVector[]
}

t.test('every forward-signature vector is reproduced', async (t) => {
  t.equal(v.scheme, 'aog-forward-v1')
  t.ok(v.vectors.length >= 3)
  for (const x of v.vectors) {
    t.equal(signatureHeader(v.secret, { t: x.t, rid: x.request_id, method: x.method, target: x.request_uri, verify: x.client_verify, cert: v.client_cert_escaped }), x.signature_header, `${x.method} ${x.request_uri}`)
  }
  t.equal(decodeURIComponent(v.client_cert_escaped), v.client_cert_pem, 'the escaped certificate decodes to the PEM')
})

t.test('a vector header set passes the signature check, and its fingerprint matches', async (t) => {
  const x = v.vectors[0]!
  const cas = readCertificates(v.client_cert_pem) // the vector certificate is self-signed
  const headers = { 'x-aog-client-cert': v.client_cert_escaped, 'x-aog-client-verify': x.client_verify, 'x-aog-signature': x.signature_header }
  try {
    forwardedIdentity(x.method, x.request_uri, headers, { secrets: [Buffer.from(v.secret)], skewSeconds: 30, cas, now: () => x.t * 1000 })
    t.fail('a CA certificate must not be accepted as an agent')
  } catch (err) {
    // The vector's timestamps predate its certificate: the signature and freshness checks passed,
    // and the certificate checks that follow refuse it.
    t.match(err, { code: 'AOG_IDENTITY_REQUIRED', detail: /validity dates|is a CA/ }, 'signature and freshness passed; refused by the certificate checks')
  }
  t.equal(new X509Certificate(v.client_cert_pem).fingerprint256.replace(/:/g, '').toLowerCase(), v.client_fingerprint)
})

const agentPem = pem('agent.pem').toString()
const escaped = encodeURIComponent(agentPem)
const cas = readCertificates(pem('ca.pem'))
const SECRET = 'test-forward-secret-0123456789'
const NOW = Date.now()

function headersFor (over: Partial<{ t: number, rid: string, method: string, target: string, verify: string, cert: string, secret: string }> = {}): Record<string, string> {
  const s = { t: Math.floor(NOW / 1000), rid: 'ab'.repeat(16), method: 'GET', target: '/challenge', verify: 'SUCCESS', cert: escaped, secret: SECRET, ...over }
  return { 'x-aog-client-cert': s.cert, 'x-aog-client-verify': s.verify, 'x-aog-signature': signatureHeader(s.secret, s) }
}

const opts = { secrets: [Buffer.from('old-secret-abcdefghijklmnop'), Buffer.from(SECRET)], skewSeconds: 30, cas, now: () => NOW }

t.test('a valid header set yields the certificate\'s identity; any secret of the list verifies', async (t) => {
  const r = forwardedIdentity('GET', '/challenge', headersFor(), opts)
  t.equal(r.identity.fingerprint, new X509Certificate(agentPem).fingerprint256.replace(/:/g, '').toLowerCase())
  t.equal(r.identity.uri, 'spiffe://aog.dev/agent/agent')
  t.equal(r.identity.source, 'forwarded')
  t.equal(r.rid, 'ab'.repeat(16))
  t.ok(forwardedIdentity('GET', '/challenge', headersFor({ secret: 'old-secret-abcdefghijklmnop' }), opts), 'the previous secret, during rotation')
})

t.test('each kind of forgery is refused with 401', async (t) => {
  const cases: Array<[string, string, string, Record<string, string | string[]>]> = [
    ['no headers', 'GET', '/challenge', {}],
    ['no signature', 'GET', '/challenge', { ...headersFor(), 'x-aog-signature': '' }],
    ['wrong secret', 'GET', '/challenge', headersFor({ secret: 'not-the-secret-0123456789' })],
    ['another path', 'GET', '/task', headersFor()],
    ['another query', 'GET', '/challenge?x=1', headersFor()],
    ['another method', 'POST', '/challenge', headersFor()],
    ['stale', 'GET', '/challenge', headersFor({ t: Math.floor(NOW / 1000) - 31 })],
    ['from the future', 'GET', '/challenge', headersFor({ t: Math.floor(NOW / 1000) + 31 })],
    ['verdict not SUCCESS', 'GET', '/challenge', headersFor({ verify: 'FAILED:certificate has expired' })],
    ['another CA', 'GET', '/challenge', headersFor({ cert: encodeURIComponent(pem('rogue.pem').toString()) })],
    ['expired', 'GET', '/challenge', headersFor({ cert: encodeURIComponent(pem('expired.pem').toString()) })],
    ['garbage certificate', 'GET', '/challenge', headersFor({ cert: 'not-a-cert' })],
    ['repeated header', 'GET', '/challenge', { ...headersFor(), 'x-aog-client-verify': ['SUCCESS', 'SUCCESS'] }],
    ['signature swapped to another certificate', 'GET', '/challenge', { ...headersFor(), 'x-aog-client-cert': encodeURIComponent(pem('agent2.pem').toString()) }],
  ]
  for (const [name, method, target, headers] of cases) {
    try {
      forwardedIdentity(method, target, headers, opts)
      t.fail(`${name}: accepted`)
    } catch (err) {
      t.ok(err instanceof AogError && err.code === 'AOG_IDENTITY_REQUIRED', name)
    }
  }
})

t.test('property: thousands of forged header sets, none accepted, none throws anything but a 401', async (t) => {
  const valid = headersFor()
  const field = fc.constantFrom('x-aog-client-cert', 'x-aog-client-verify', 'x-aog-signature')
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('replace' as const), field, value: fc.string({ maxLength: 200 }) }),
    fc.record({ kind: fc.constant('flip' as const), field, at: fc.nat(), bit: fc.integer({ min: 0, max: 6 }) }),
    fc.record({ kind: fc.constant('drop' as const), field }),
    fc.record({ kind: fc.constant('target' as const), value: fc.string({ maxLength: 40 }) })
  )
  let runs = 0
  fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (ms) => {
    runs++
    const h: Record<string, string> = { ...valid }
    let target = '/challenge'
    for (const m of ms) {
      if (m.kind === 'replace') h[m.field] = m.value
      else if (m.kind === 'drop') delete h[m.field]
      else if (m.kind === 'target') target = m.value === '/challenge' ? '/x' : m.value
      else {
        const s = h[m.field] ?? ''
        if (s.length === 0) continue
        const i = m.at % s.length
        const c = String.fromCharCode(s.charCodeAt(i) ^ (1 << m.bit))
        h[m.field] = s.slice(0, i) + c + s.slice(i + 1)
      }
    }
    const changed = target !== '/challenge' || Object.keys(valid).some((k) => h[k] !== valid[k])
    if (!changed) return true
    try {
      forwardedIdentity('GET', target, h, opts)
      // The only acceptable acceptance: an equivalent header set (e.g. a case flip in hex is refused
      // by the format check, so nothing else should ever get here).
      return false
    } catch (err) {
      return err instanceof AogError && err.status === 401
    }
  }), { numRuns: 3000 })
  t.equal(runs, 3000, '3000 forged header sets refused with 401')
})

t.test('the forwarded certificate must be usable for TLS client authentication, as direct mode requires', async (t) => {
  const ku = mintCert({ name: 'encipher-only', profile: 'agent-no-ku' })
  const noEku = mintCert({ name: 'no-eku', profile: 'agent-no-eku' })
  const serverOnly = mintCert({ name: 'server-only', profile: 'server' })
  const refused: Array<[string, Buffer]> = [
    ["the gate's own server certificate (serverAuth only, signed by the agent CA)", pem('server.pem')],
    ['a minted serverAuth-only certificate', serverOnly.cert],
    ['keyUsage without digitalSignature or keyAgreement', ku.cert],
  ]
  for (const [name, cert] of refused) {
    t.throws(() => forwardedIdentity('GET', '/challenge', headersFor({ cert: encodeURIComponent(cert.toString()) }), opts),
      { code: 'AOG_IDENTITY_REQUIRED', detail: /TLS client authentication/ }, name)
  }
  t.equal(forwardedIdentity('GET', '/challenge', headersFor({ cert: encodeURIComponent(noEku.cert.toString()) }), opts).identity.subject, 'no-eku',
    'without extendedKeyUsage (any use allowed, as OpenSSL) and with digitalSignature: accepted')
})

t.test('forwarded and direct mode judge the dates with one check, both ends inclusive', async (t) => {
  const nb = new Date(Math.floor(NOW / 1000) * 1000 - 10_000)
  const na = new Date(Math.floor(NOW / 1000) * 1000 + 10_000)
  const c = mintCert({ name: 'dated', notBefore: nb, notAfter: na })
  const escapedC = encodeURIComponent(c.cert.toString())
  const at = (ms: number): unknown => {
    try {
      return forwardedIdentity('GET', '/challenge', headersFor({ cert: escapedC, t: Math.floor(ms / 1000) }), { ...opts, now: () => ms }).identity.subject
    } catch (err) {
      return (err as AogError).detail
    }
  }
  t.equal(at(nb.getTime()), 'dated', 'at notBefore')
  t.equal(at(na.getTime()), 'dated', 'at notAfter')
  t.equal(at(na.getTime() + 1000), 'the client certificate is outside its validity dates', 'a second after notAfter')
  t.equal(at(nb.getTime() - 1000), 'the client certificate is outside its validity dates', 'a second before notBefore')
})
