/**
 * Identity from the TLS peer (direct mode, docs/protocol.md section 1). The listener already requires
 * and verifies a client certificate (requestCert, rejectUnauthorized); this checks again per
 * request that the socket is authorized and that a real certificate (with DER bytes) is present,
 * never trusting a truthy `{}` from getPeerCertificate(). The validity dates are checked on every
 * request: a kept-alive connection or a resumed TLS session outlives the handshake's check.
 */
import { createHash } from 'node:crypto'
import type { PeerCertificate, TLSSocket } from 'node:tls'
import { AogError } from '../errors.js'
import { certFacts, checkValidity } from './der.js'

export interface Identity {
  /** F: lowercase hex SHA-256 of the leaf certificate's DER. */
  fingerprint: string
  /** Certificate serial number: uppercase hex of its DER two's complement bytes (derSerial). */
  serial: string
  /** Subject CN, or '' */
  subject: string
  /** First URI SAN (e.g. spiffe://…), or '' */
  uri: string
  /** tls, forwarded: a certificate; signature: an HTTP message signature's key (Web Bot Auth). */
  source: 'tls' | 'forwarded' | 'signature'
}

/** Per connection: the identity and the certificate's dates (the dates, not a verdict, are kept). */
interface Peer { id: Identity, notBefore: number, notAfter: number }
const cache = new WeakMap<TLSSocket, Peer>()
const presentedBy = new WeakMap<TLSSocket, boolean>()

/** F of a DER certificate. */
export function fingerprintOf (der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex')
}

/** First URI entry of a subjectAltName string ("URI:spiffe://…, DNS:…"). */
export function firstUri (san: string | undefined): string {
  return /(?:^|,)\s*URI:([^,]*)/.exec(san ?? '')?.[1]!.trimEnd() ?? ''
}

/** The peer's certificate, when it has DER bytes (getPeerCertificate() gives `{}` for none). */
function peerCertificate (socket: TLSSocket): PeerCertificate | undefined {
  const cert = socket.getPeerCertificate(false)
  return cert !== null && typeof cert === 'object' && Buffer.isBuffer(cert.raw) && cert.raw.length > 0 ? cert : undefined
}

/**
 * Whether the TLS peer presented a certificate at all (verified or not). With --web-bot-auth the
 * listener lets unverified peers in: one that presented a certificate is refused, never treated as
 * one that presented none.
 */
export function presentedCertificate (socket: TLSSocket): boolean {
  // Per connection: getPeerCertificate builds a new object from the certificate on every call.
  let presented = presentedBy.get(socket)
  if (presented === undefined) {
    presented = peerCertificate(socket) !== undefined
    presentedBy.set(socket, presented)
  }
  return presented
}

/**
 * The identity of an authorized TLS peer within its validity dates, or AOG_IDENTITY_REQUIRED.
 * The identity and the dates are cached per connection; the dates are compared with `nowMs` on
 * every call.
 */
export function tlsIdentity (socket: TLSSocket, nowMs: number = Date.now()): Identity {
  if (socket.authorized !== true) throw new AogError('AOG_IDENTITY_REQUIRED', 'a client certificate signed by the agent CA is required')
  let peer = cache.get(socket)
  if (peer === undefined) {
    const cert = peerCertificate(socket)
    if (cert === undefined) throw new AogError('AOG_IDENTITY_REQUIRED', 'a client certificate signed by the agent CA is required')
    let facts
    try {
      facts = certFacts(cert.raw)
    } catch {
      throw new AogError('AOG_IDENTITY_REQUIRED', 'the client certificate is unreadable')
    }
    peer = {
      id: {
        fingerprint: fingerprintOf(cert.raw),
        serial: facts.serial,
        subject: typeof cert.subject?.CN === 'string' ? cert.subject.CN : '',
        uri: firstUri(cert.subjectaltname),
        source: 'tls',
      },
      notBefore: facts.notBefore,
      notAfter: facts.notAfter,
    }
    cache.set(socket, peer)
  }
  checkValidity(peer.notBefore, peer.notAfter, nowMs)
  return peer.id
}
