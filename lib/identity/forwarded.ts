/**
 * Identity from signed forwarded headers (scheme aog-forward-v1, docs/protocol.md section 1.1). The gate
 * trusts a forwarded certificate only when an HMAC made with one of its secrets covers it, the
 * verdict, the method, the exact request target, a fresh timestamp and a request id; then it checks
 * the certificate itself (issued and signed by an agent CA, within its validity dates, usable for
 * TLS client authentication as OpenSSL's checks in direct mode require). Revocation
 * and the request id's single use are checked by the caller (the latter in the store call).
 */
import { createHmac, timingSafeEqual, X509Certificate } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import { AogError } from '../errors.js'
import { firstUri, fingerprintOf, type Identity } from './tls.js'
import { certFacts, checkValidity, clientAuthAllowed, type CertFacts } from './der.js'

const SCHEME = 'aog-forward-v1'
export const HEADERS = { cert: 'x-aog-client-cert', verify: 'x-aog-client-verify', signature: 'x-aog-signature' } as const

export interface SignInput {
  t: number
  rid: string
  method: string
  /** The path and query exactly as the client sent them (nginx $request_uri). */
  target: string
  /** X-AOG-Client-Verify as sent. */
  verify: string
  /** X-AOG-Client-Cert as sent (URL-encoded PEM). */
  cert: string
}

/** The v1 HMAC (hex) over the canonical message. */
function signatureV1 (secret: string | Buffer, s: SignInput): string {
  const msg = [SCHEME, String(s.t), s.rid, s.method, s.target, s.verify, s.cert].join('\n')
  return createHmac('sha256', secret).update(msg, 'latin1').digest('hex')
}

/** The X-AOG-Signature header value (what nginx/aog-sign.js produces). */
export function signatureHeader (secret: string | Buffer, s: SignInput): string {
  return `t=${s.t},rid=${s.rid},v1=${signatureV1(secret, s)}`
}

export interface ForwardedOptions {
  secrets: Buffer[]
  skewSeconds: number
  cas: X509Certificate[]
  now?: () => number
  /**
   * Web Bot Auth behind the proxy: a signed header set whose verdict is NONE and whose certificate
   * is empty (no certificate presented) is vouched for, with no identity: the request's own
   * signature then identifies it. A presented certificate is still checked as always.
   */
  allowNoCertificate?: boolean
}

export interface ForwardedResult {
  identity: Identity
  /** The request id, to be used once within the skew window. */
  rid: string
}

/** With allowNoCertificate: a vouched-for request whose client presented no certificate. */
export interface NoCertificate {
  identity: undefined
  rid: string
}

function fail (reason: string): never {
  throw new AogError('AOG_IDENTITY_REQUIRED', reason)
}

function single (h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? undefined : h // a repeated header is never trusted
}

const SIG = /^t=(\d{1,12}),rid=([0-9a-f]{32}),v1=([0-9a-f]{64})$/

/** The request id of each header set whose signature verified (kept also when a later check refuses it). */
const verifiedIds = new WeakMap<IncomingHttpHeaders, string>()

/**
 * The proxy's request id (rid) of a request whose forwarded signature verified, whatever the checks
 * after it decided; undefined when it did not verify (a client's own id is never adopted).
 */
export function verifiedRequestId (headers: IncomingHttpHeaders): string | undefined {
  return verifiedIds.get(headers)
}

/** The header nginx sets to the address it saw ($remote_addr); read only from a vouched-for request. */
const CLIENT_ADDRESS_HEADER = 'x-real-ip'
const ADDRESS = /^[0-9A-Fa-f:.]{2,45}$/

/**
 * The client's address as the proxy saw it: X-Real-IP of a request whose forwarded signature
 * verified, when it looks like one IPv4 or IPv6 address; undefined otherwise. For logs only: the
 * header is not signed, so it is as trustworthy as the path between the proxy and the gate.
 */
export function forwardedClientAddress (headers: IncomingHttpHeaders): string | undefined {
  if (!verifiedIds.has(headers)) return undefined
  const value = headers[CLIENT_ADDRESS_HEADER]
  return typeof value === 'string' && ADDRESS.test(value) ? value : undefined
}

/** Verify a forwarded header set; throws 401 AOG_IDENTITY_REQUIRED with a safe reason. */
export function forwardedIdentity (method: string, target: string, headers: IncomingHttpHeaders, opts: ForwardedOptions & { allowNoCertificate: true }): ForwardedResult | NoCertificate
export function forwardedIdentity (method: string, target: string, headers: IncomingHttpHeaders, opts: ForwardedOptions): ForwardedResult
export function forwardedIdentity (method: string, target: string, headers: IncomingHttpHeaders, opts: ForwardedOptions): ForwardedResult | NoCertificate {
  // nginx sends no header for an empty value: no certificate arrives as no X-AOG-Client-Cert.
  const cert = single(headers[HEADERS.cert]) ?? (opts.allowNoCertificate === true && headers[HEADERS.cert] === undefined ? '' : undefined)
  const verdict = single(headers[HEADERS.verify])
  const signature = single(headers[HEADERS.signature])
  if (cert === undefined || verdict === undefined || signature === undefined || (cert === '' && opts.allowNoCertificate !== true)) fail('forwarded identity headers missing')
  const m = SIG.exec(signature)
  if (m === null) fail('malformed forwarded signature')
  const t = Number(m[1])
  const rid = m[2]!
  const given = Buffer.from(m[3]!, 'hex')
  const now = (opts.now ?? Date.now)() / 1000
  if (Math.abs(now - t) > opts.skewSeconds) fail('forwarded signature is stale')
  const input: SignInput = { t, rid, method, target, verify: verdict, cert }
  // Every secret is tried (rotation); each comparison is constant-time on equal-length digests.
  let ok = false
  for (const secret of opts.secrets) {
    const want = Buffer.from(signatureV1(secret, input), 'hex')
    if (want.length === given.length && timingSafeEqual(want, given)) ok = true
  }
  if (!ok) fail('forwarded signature invalid')
  // From here the proxy vouches for this request: its id (nginx's $request_id) names it in logs and answers.
  verifiedIds.set(headers, rid)
  // No certificate at all (nginx: NONE and an empty certificate): the request's HTTP signature decides.
  if (opts.allowNoCertificate === true && verdict === 'NONE' && cert === '') return { rid, identity: undefined }
  if (verdict !== 'SUCCESS') fail('the TLS terminator did not verify the client certificate')

  let x509: X509Certificate
  let facts: CertFacts
  try {
    x509 = new X509Certificate(decodeURIComponent(cert))
    facts = certFacts(x509.raw)
  } catch {
    fail('forwarded certificate unreadable')
  }
  // The same date check as direct mode (der.ts), on the signature's clock.
  checkValidity(facts.notBefore, facts.notAfter, now * 1000)
  if (x509.ca) fail('forwarded certificate is a CA')
  if (!clientAuthAllowed(facts.extensions)) fail('forwarded certificate is not for TLS client authentication (extendedKeyUsage/keyUsage)')
  const issuer = opts.cas.find((ca) => x509.checkIssued(ca) && x509.verify(ca.publicKey))
  if (issuer === undefined) fail('forwarded certificate not issued by an agent CA')
  return {
    rid,
    identity: {
      fingerprint: fingerprintOf(x509.raw),
      serial: facts.serial,
      subject: /(?:^|\n)CN=([^\n]*)/.exec(x509.subject)?.[1] ?? '',
      uri: firstUri(x509.subjectAltName),
      source: 'forwarded',
    },
  }
}

/** Split a PEM bundle into certificates. */
export function readCertificates (pem: Buffer | string): X509Certificate[] {
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  return blocks.map((b) => new X509Certificate(b))
}
