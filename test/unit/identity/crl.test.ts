/** CRL loading (RFC 5280 edge cases), serial normalisation and the CRL's nextUpdate policy. */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { crlDirectoryFiles, loadCrls, parseCrl } from '../../../lib/identity/crl.js'
import { certFacts, derSerial } from '../../../lib/identity/der.js'
import { forwardedIdentity, readCertificates, signatureHeader } from '../../../lib/identity/forwarded.js'
import { tlsIdentity, type Identity } from '../../../lib/identity/tls.js'
import { Revocation } from '../../../lib/identity/revocation.js'
import { createLogger } from '../../../lib/log.js'
import { createMetrics } from '../../../lib/metrics.js'
import { buildCrl, crlFile, intBytes, der } from '../../helpers/crl.js'
import { mintCa, mintCert, pem } from '../../helpers/pki.js'
import type { TLSSocket } from 'node:tls'

const cas = readCertificates(pem('ca.pem'))
const quiet = createLogger({ level: 'silent', destination: { write: () => {} } })
const ident = (serial: string): Identity => ({ fingerprint: 'ab'.repeat(32), serial, subject: 'x', uri: '', source: 'tls' })

t.test('serials are compared as DER two\'s complement bytes, whatever their sign', async (t) => {
  t.equal(derSerial(Buffer.from([0xfb])), 'FB')
  t.equal(derSerial(Buffer.from([0xff, 0xfb])), 'FB', 'a redundant FF is dropped')
  t.equal(derSerial(Buffer.from([0x00, 0x80])), '0080', 'the 00 that keeps 128 positive stays')
  t.equal(derSerial(Buffer.from([0x00, 0x00, 0x10])), '10', 'a redundant 00 is dropped')
  const neg = mintCert({ name: 'negative', serial: '-5' })
  const high = mintCert({ name: 'high', serial: '128' })
  t.equal(certFacts(new X509Certificate(neg.cert).raw).serial, 'FB', 'the certificate with serial -5')
  t.equal(certFacts(new X509Certificate(high.cert).raw).serial, '0080')
  const set = loadCrls(buildCrl({ revoked: [{ serial: -5n }, { serial: 128n }] }), cas)
  t.same([...set.serials].sort(), ['0080', 'FB'], 'the CRL entries, the same form')

  // Both identity paths give that form, so the revocation check matches: forwarded...
  const revocation = new Revocation({ crlFile: crlFile(buildCrl({ revoked: [{ serial: -5n }] })), cas, logger: quiet, pollMs: 0 })
  t.teardown(() => { revocation.close() })
  const escaped = encodeURIComponent(neg.cert.toString())
  const now = Date.now()
  const s = { t: Math.floor(now / 1000), rid: 'cd'.repeat(16), method: 'GET', target: '/challenge', verify: 'SUCCESS', cert: escaped }
  const headers = { 'x-aog-client-cert': escaped, 'x-aog-client-verify': 'SUCCESS', 'x-aog-signature': signatureHeader('0123456789abcdef0123', s) }
  const fwd = forwardedIdentity('GET', '/challenge', headers, { secrets: [Buffer.from('0123456789abcdef0123')], skewSeconds: 30, cas, now: () => now })
  t.equal(fwd.identity.serial, 'FB')
  t.throws(() => { revocation.check(fwd.identity) }, { code: 'AOG_NOT_AUTHORIZED' }, 'forwarded: the revoked negative serial is refused')
  // ... and the TLS peer.
  const socket = { authorized: true, getPeerCertificate: () => ({ raw: new X509Certificate(neg.cert).raw, subject: { CN: 'negative' }, serialNumber: '-05' }) } as unknown as TLSSocket
  const id = tlsIdentity(socket)
  t.equal(id.serial, 'FB')
  t.throws(() => { revocation.check(id) }, { code: 'AOG_NOT_AUTHORIZED' }, 'direct: the revoked negative serial is refused')
  t.doesNotThrow(() => { revocation.check(ident('05')) }, 'serial +5 is another certificate')
})

t.test('only complete CRLs are taken (RFC 5280 5.2); a refused file keeps the previous list', async (t) => {
  const crit = (o: string, value = der(0x05)): { oid: string, critical: boolean, value: Buffer } => ({ oid: o, critical: true, value })
  const refused: Array<[string, Buffer, RegExp]> = [
    ['a delta CRL (deltaCRLIndicator)', buildCrl({ revoked: [{ serial: 7n }], extensions: [crit('2.5.29.27', der(0x02, Buffer.from([1])))] }), /delta CRL/],
    ['an unknown critical CRL extension', buildCrl({ revoked: [{ serial: 7n }], extensions: [crit('1.3.6.1.4.1.99999.1')] }), /unknown critical extension/],
    ['an unknown critical entry extension', buildCrl({ revoked: [{ serial: 7n, extensions: [crit('1.3.6.1.4.1.99999.2')] }] }), /entry has an unknown critical/],
    ['an indirect CRL entry (certificateIssuer)', buildCrl({ revoked: [{ serial: 7n, extensions: [crit('2.5.29.29', der(0x30))] }] }), /entry has an unknown critical/],
    ['a partitioned CRL (issuingDistributionPoint with onlySomeReasons)', buildCrl({ revoked: [{ serial: 7n }], extensions: [crit('2.5.29.28', der(0x30, der(0x83, Buffer.from([0x07, 0x80]))))] }), /partial scope/],
  ]
  for (const [name, data, why] of refused) t.throws(() => parseCrl(data, cas), { message: why }, name)
  const accepted: Array<[string, Buffer]> = [
    ['an unknown non-critical extension', buildCrl({ revoked: [{ serial: 7n }], extensions: [{ oid: '1.3.6.1.4.1.99999.1', value: der(0x05) }] })],
    ['a CRL number', buildCrl({ revoked: [{ serial: 7n }], extensions: [{ oid: '2.5.29.20', value: der(0x02, Buffer.from([9])) }] })],
    ['an IDP saying user certificates only', buildCrl({ revoked: [{ serial: 7n }], extensions: [crit('2.5.29.28', der(0x30, der(0x81, Buffer.from([0xff]))))] })],
    ['a reason code on an entry', buildCrl({ revoked: [{ serial: 7n, extensions: [{ oid: '2.5.29.21', value: der(0x0a, Buffer.from([1])) }] }] })],
    ['the CRL openssl made for the dev PKI', pem('crl.pem')],
  ]
  for (const [name, data] of accepted) t.ok(parseCrl(data, cas).serials.size >= 1, name)

  const file = crlFile(buildCrl({ revoked: [{ serial: 5n }] }))
  const lines: string[] = []
  const metrics = createMetrics({ defaults: false })
  const revocation = new Revocation({ crlFile: file, cas, logger: createLogger({ level: 'info', destination: { write: (s: string) => { lines.push(s) } } }), pollMs: 0, metrics })
  t.teardown(() => { revocation.close() })
  for (const [name, data] of refused) {
    writeFileSync(file, data)
    revocation.reload()
    t.throws(() => { revocation.check(ident('05')) }, { code: 'AOG_NOT_AUTHORIZED' }, `${name}: serial 5 still revoked`)
    t.doesNotThrow(() => { revocation.check(ident('07')) }, `${name}: its serial 7 is not taken`)
  }
  t.match(lines.join(''), /CRL reload refused; the previous one stays in force/)
  t.match(await metrics.registry.metrics(), /aog_crl_reloads_total\{result="refused"\} 5/)
})

t.test('DER and PEM, one CRL or several (one per CA) in a file: every CRL counts, for both uses', async (t) => {
  const other = mintCa('Second agent CA')
  const both = [...cas, ...readCertificates(other.cert)]
  const a = buildCrl({ revoked: [{ serial: 0x10n }] })
  const b = buildCrl({ ca: other, revoked: [{ serial: 0x20n }] })
  for (const [name, data] of [
    ['PEM blocks', Buffer.concat([buildCrl({ revoked: [{ serial: 0x10n }], pem: true }), Buffer.from('\n'), buildCrl({ ca: other, revoked: [{ serial: 0x20n }], pem: true })])],
    ['DER back to back', Buffer.concat([a, b])],
  ] as const) {
    const set = loadCrls(data, both)
    t.equal(set.crls.length, 2, `${name}: two CRLs`)
    t.same([...set.serials].sort(), ['10', '20'], `${name}: the serials of both`)
    t.equal(set.pems.length, 2, `${name}: both go to the TLS context`)
    t.ok(set.pems.every((p) => p.startsWith('-----BEGIN X509 CRL-----\n')), `${name}: as PEM`)
    const seen: Array<string[] | undefined> = []
    const r = new Revocation({ crlFile: crlFile(data), cas: both, logger: quiet, pollMs: 0, onCrl: (p) => { seen.push(p) } })
    t.teardown(() => { r.close() })
    t.throws(() => { r.check(ident('20')) }, { code: 'AOG_NOT_AUTHORIZED' }, `${name}: the second CA's revocation is enforced per request`)
    t.equal(seen[0]?.length, 2, `${name}: and given to the TLS context`)
  }
  t.throws(() => loadCrls(Buffer.concat([a, Buffer.from('garbage')]), cas), 'a trailing non-CRL refuses the file')
  const skipped = loadCrls(Buffer.concat([a, b]), cas)
  t.same([skipped.crls.length, skipped.skipped], [1, ['CRL #2']], 'a CRL of no configured CA (no CA has its issuer name) is skipped, not applied')
  t.throws(() => loadCrls(b, cas), /no CRL of a configured agent CA/, 'a file with no CRL of a configured CA is refused')
  // Same issuer name as the dev CA, another key: a forgery or a broken update, never skipped.
  const impostor = { cert: pem('ca.pem'), key: other.key }
  t.throws(() => loadCrls(Buffer.concat([buildCrl({ ca: impostor }), a]), cas), /CRL #1: the CRL is not signed by a configured CA \(its issuer's key does not verify/, 'a CRL naming a configured CA must verify with its key')
  t.same([intBytes(-5n), intBytes(128n), intBytes(-129n)].map(derSerial), ['FB', '0080', 'FF7F'], 'the test encoder agrees with derSerial')
})

t.test('nextUpdate: still enforced, out of the TLS context before it passes, not ready after the grace', async (t) => {
  const start = Date.now()
  let now = start
  const file = crlFile(buildCrl({ revoked: [{ serial: 5n }], thisUpdate: new Date(start - 60_000), nextUpdate: new Date(start + 60_000) }))
  const lines: string[] = []
  const seen: Array<string[] | undefined> = []
  const metrics = createMetrics({ defaults: false })
  const r = new Revocation({ crlFile: file, cas, logger: createLogger({ level: 'info', destination: { write: (s: string) => { lines.push(s) } } }), pollMs: 0, graceSeconds: 600, metrics, now: () => now, onCrl: (p) => { seen.push(p) } })
  t.teardown(() => { r.close() })
  t.equal(seen.length, 1)
  t.equal(seen[0]?.length, 1, 'a current CRL goes to the TLS context')
  t.match(r.crlStatus(), { stale: false, handshake: true, ready: true })
  t.match(await metrics.registry.metrics(), new RegExp(`aog_crl_next_update_timestamp_seconds ${Math.floor((start + 60_000) / 1000)}`))

  now = start + 56_000 // within the margin before nextUpdate
  r.refresh()
  t.equal(seen.length, 2)
  t.equal(seen[1], undefined, 'taken out of the TLS context before OpenSSL would refuse every handshake')
  t.match(r.crlStatus(), { stale: false, handshake: false, ready: true })
  now = start + 61_000
  r.refresh()
  t.match(r.crlStatus(), { stale: true, handshake: false, ready: true }, 'stale, within the grace')
  t.throws(() => { r.check(ident('05')) }, { code: 'AOG_NOT_AUTHORIZED' }, 'its revocations are still enforced')
  t.match(lines.join(''), /"level":40[^\n]*past its nextUpdate/, 'a warning')
  t.match(await metrics.registry.metrics(), /aog_crl_stale 1/)
  now = start + 60_000 + 600_001
  t.match(r.crlStatus(), { stale: true, ready: false }, 'not ready once the grace is over')

  // A new CRL puts things right; one not yet valid (thisUpdate ahead) is enforced but kept out of TLS.
  writeFileSync(file, buildCrl({ revoked: [{ serial: 6n }], thisUpdate: new Date(now + 30_000), nextUpdate: new Date(now + 3600_000) }))
  r.reload()
  t.equal(seen.at(-1), undefined, 'not yet valid: not in the TLS context')
  t.throws(() => { r.check(ident('06')) }, { code: 'AOG_NOT_AUTHORIZED' })
  t.match(r.crlStatus(), { stale: false, handshake: false, ready: true })
  now += 30_000
  r.refresh()
  t.equal(seen.at(-1)?.length, 1, 'in the TLS context from its thisUpdate')
  t.match(await metrics.registry.metrics(), /aog_crl_stale 0/)
})

t.test('a reload the TLS context refuses changes nothing', async (t) => {
  const file = crlFile(buildCrl({ revoked: [{ serial: 5n }] }))
  let refuse = false
  const r = new Revocation({ crlFile: file, cas, logger: quiet, pollMs: 0, onCrl: () => { if (refuse) throw new Error('refused by the TLS context') } })
  t.teardown(() => { r.close() })
  writeFileSync(file, buildCrl({ revoked: [{ serial: 6n }] }))
  refuse = true
  r.reload()
  t.throws(() => { r.check(ident('05')) }, { code: 'AOG_NOT_AUTHORIZED' }, 'the previous list stays')
  t.doesNotThrow(() => { r.check(ident('06')) }, 'the refused one is not half-applied')
  refuse = false
  r.reload()
  t.throws(() => { r.check(ident('06')) }, { code: 'AOG_NOT_AUTHORIZED' })
  t.doesNotThrow(() => { r.check(ident('05')) })
  t.throws(() => new Revocation({ crlFile: crlFile(buildCrl({ extensions: [{ oid: '2.5.29.27', critical: true, value: der(0x02, Buffer.from([1])) }] })), cas, logger: quiet, pollMs: 0 }), /cannot load the CRL/, 'at start-up a refused CRL stops the gate')
})

t.test('of several CRLs of one CA, the newest is in force (an old dated file beside a fresh one)', async (t) => {
  const day = 86400_000
  const old = buildCrl({ revoked: [{ serial: 5n }], thisUpdate: new Date(Date.now() - 3 * day), nextUpdate: new Date(Date.now() - 2 * day) })
  const fresh = buildCrl({ revoked: [{ serial: 7n }], thisUpdate: new Date(Date.now() - 60_000), nextUpdate: new Date(Date.now() + day) })
  for (const [name, data] of [['old first', Buffer.concat([old, fresh])], ['fresh first', Buffer.concat([fresh, old])]] as const) {
    const set = loadCrls(data, cas)
    t.equal(set.crls.length, 1, `${name}: one CRL in force`)
    t.same([...set.serials], [derSerial(intBytes(7n))], `${name}: the fresh CRL's revocations only (serial 5 was lifted)`)
    t.ok(set.nextUpdate !== undefined && set.nextUpdate > Date.now(), `${name}: nextUpdate is the fresh CRL's, so the set is not stale`)
    t.equal(set.pems.length, 1, `${name}: the handshake gets the fresh CRL only`)
  }
  const at = new Date(Date.now() - 60_000)
  const tie = loadCrls(Buffer.concat([buildCrl({ revoked: [{ serial: 5n }], thisUpdate: at }), buildCrl({ revoked: [{ serial: 7n }], thisUpdate: at })]), cas)
  t.same([...tie.serials].sort(), [derSerial(intBytes(5n)), derSerial(intBytes(7n))].sort(), 'two CRLs of the same thisUpdate: both are in force (fail closed)')
})

t.test('a CRL directory lists *.pem, *.crl, *.der and openssl rehash names (*.r0), not hidden or other files', async (t) => {
  const { mkdtempSync, writeFileSync: write } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join, basename } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'aog-crldir-'))
  for (const f of ['a.pem', 'b.crl', 'c.der', '1a2b3c4d.r0', '1a2b3c4d.r12', '.hidden.pem', 'notes.txt', 'x.r']) write(join(dir, f), '')
  t.same(crlDirectoryFiles(dir).map((f) => basename(f)), ['1a2b3c4d.r0', '1a2b3c4d.r12', 'a.pem', 'b.crl', 'c.der'])
})
