/**
 * Identity from the TLS peer (direct mode, PROTOCOL.md section 1). The listener already requires
 * and verifies a client certificate (requestCert, rejectUnauthorized); this checks again per
 * request that the socket is authorized and that a real certificate (with DER bytes) is present,
 * never trusting a truthy `{}` from getPeerCertificate().
 */
import { createHash } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import { AogError } from '../errors.js'
import { normalSerial } from './crl.js'

export interface Identity {
  /** F: lowercase hex SHA-256 of the leaf certificate's DER. */
  fingerprint: string
  /** Certificate serial number, uppercase hex without leading zeros (as normalSerial gives). */
  serial: string
  /** Subject CN, or '' */
  subject: string
  /** First URI SAN (e.g. spiffe://…), or '' */
  uri: string
  source: 'tls' | 'forwarded'
}

const cache = new WeakMap<TLSSocket, Identity>()

/** F of a DER certificate. */
export function fingerprintOf (der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex')
}

/** First URI entry of a subjectAltName string ("URI:spiffe://…, DNS:…"). */
export function firstUri (san: string | undefined): string {
  if (san === undefined) return ''
  for (const part of san.split(',')) {
    const p = part.trim()
    if (p.startsWith('URI:')) return p.slice(4)
  }
  return ''
}

/** The identity of an authorized TLS peer, or AOG_IDENTITY_REQUIRED. Cached per connection. */
export function tlsIdentity (socket: TLSSocket): Identity {
  if (socket.authorized !== true) throw new AogError('AOG_IDENTITY_REQUIRED', 'a client certificate signed by the agent CA is required')
  const hit = cache.get(socket)
  if (hit !== undefined) return hit
  const cert = socket.getPeerCertificate(false)
  if (cert === null || typeof cert !== 'object' || !Buffer.isBuffer(cert.raw) || cert.raw.length === 0) {
    throw new AogError('AOG_IDENTITY_REQUIRED', 'a client certificate signed by the agent CA is required')
  }
  const id: Identity = {
    fingerprint: fingerprintOf(cert.raw),
    serial: normalSerial(String(cert.serialNumber ?? '')),
    subject: typeof cert.subject?.CN === 'string' ? cert.subject.CN : '',
    uri: firstUri(cert.subjectaltname),
    source: 'tls',
  }
  cache.set(socket, id)
  return id
}
