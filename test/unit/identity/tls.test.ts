/** The TLS peer's identity: validity dates checked on every request, the dates cached per connection. */
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import { tlsIdentity } from '../../../lib/identity/tls.js'
import { mintCert, pem } from '../../helpers/pki.js'

function fakeSocket (cert: Buffer): { socket: TLSSocket, reads: () => number } {
  let reads = 0
  const x = new X509Certificate(cert)
  const socket = {
    authorized: true,
    getPeerCertificate: () => { reads++; return { raw: x.raw, subject: { CN: 'dated' }, subjectaltname: x.subjectAltName } },
  } as unknown as TLSSocket
  return { socket, reads: () => reads }
}

t.test('one connection: allowed within the dates, 401 from the first request after notAfter', async (t) => {
  const base = Math.floor(Date.now() / 1000) * 1000
  const c = mintCert({ name: 'dated', notBefore: new Date(base - 60_000), notAfter: new Date(base + 60_000) })
  const { socket, reads } = fakeSocket(c.cert)
  const first = tlsIdentity(socket, base)
  t.equal(first.uri, 'spiffe://aog.dev/agent/dated')
  t.equal(tlsIdentity(socket, base + 60_000), first, 'at notAfter: the cached identity')
  t.throws(() => tlsIdentity(socket, base + 60_001), { code: 'AOG_IDENTITY_REQUIRED', status: 401 }, 'just past notAfter, on the same connection')
  t.throws(() => tlsIdentity(socket, base - 60_001), { code: 'AOG_IDENTITY_REQUIRED' }, 'before notBefore')
  t.equal(tlsIdentity(socket, base + 1), first, 'the verdict is not cached: the dates are')
  t.equal(reads(), 1, 'the certificate is read once per connection')
})

t.test('an unauthorized socket or one without a certificate is refused', async (t) => {
  const x = new X509Certificate(pem('agent.pem'))
  t.throws(() => tlsIdentity({ authorized: false, getPeerCertificate: () => ({ raw: x.raw }) } as unknown as TLSSocket), { code: 'AOG_IDENTITY_REQUIRED' })
  t.throws(() => tlsIdentity({ authorized: true, getPeerCertificate: () => ({}) } as unknown as TLSSocket), { code: 'AOG_IDENTITY_REQUIRED' })
  t.throws(() => tlsIdentity({ authorized: true, getPeerCertificate: () => ({ raw: Buffer.from('nope') }) } as unknown as TLSSocket), { code: 'AOG_IDENTITY_REQUIRED' })
})
