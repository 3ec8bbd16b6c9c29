/**
 * The little DER reading that identity needs (certificates and CRLs): a TLV walk, times, serials
 * as DER two's complement bytes, and a certificate's validity, serial and extensions. One reader
 * for both modes, so the TLS peer and a forwarded certificate are judged by the same code.
 */
import { AogError } from '../errors.js'

export interface Tlv { tag: number, start: number, end: number }

export function tlv (b: Uint8Array, at: number): Tlv {
  if (at + 2 > b.length) throw new Error('truncated DER')
  const tag = b[at]!
  let len = b[at + 1]!
  let start = at + 2
  if (len & 0x80) {
    const n = len & 0x7f
    if (n === 0 || n > 4 || start + n > b.length) throw new Error('bad DER length')
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + b[start + i]!
    start += n
  }
  const end = start + len
  if (end > b.length) throw new Error('truncated DER')
  return { tag, start, end }
}

export function children (b: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = []
  for (let at = parent.start; at < parent.end;) {
    const c = tlv(b, at)
    out.push(c)
    at = c.end
  }
  return out
}

/** A UTCTime (0x17) or GeneralizedTime (0x18), in ms since the epoch. */
export function time (b: Buffer, t: Tlv): number {
  const s = b.subarray(t.start, t.end).toString('latin1')
  const m = t.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : t.tag === 0x18 ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null
  if (m === null) throw new Error('bad DER time')
  let year = Number(m[1])
  if (t.tag === 0x17) year += year < 50 ? 2000 : 1900
  return Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]))
}

/**
 * A serial number as the uppercase hex of its DER INTEGER content, in minimal two's complement
 * (a redundant leading 00 or FF dropped): -5 is FB, 128 is 0080. The certificate's and the CRL's
 * bytes go through this same function, so they match whatever their sign.
 */
export function derSerial (content: Uint8Array): string {
  let i = 0
  while (i + 1 < content.length && ((content[i] === 0x00 && (content[i + 1]! & 0x80) === 0) || (content[i] === 0xff && (content[i + 1]! & 0x80) !== 0))) i++
  return Buffer.from(content.subarray(i)).toString('hex').toUpperCase()
}

export interface Extension { critical: boolean, value: Buffer }

/** Extensions of a SEQUENCE OF Extension, by the hex of the OID's DER content. */
export function extensions (b: Buffer, seq: Tlv): Map<string, Extension> {
  const out = new Map<string, Extension>()
  for (const ext of children(b, seq)) {
    const [oid, second, third] = children(b, ext)
    if (oid === undefined || oid.tag !== 0x06) throw new Error('bad extension')
    const critical = second?.tag === 0x01 && b[second.start] !== 0
    const value = second?.tag === 0x04 ? second : third
    if (value === undefined || value.tag !== 0x04) throw new Error('bad extension')
    const key = b.subarray(oid.start, oid.end).toString('hex')
    if (out.has(key)) throw new Error('repeated extension')
    out.set(key, { critical, value: b.subarray(value.start, value.end) })
  }
  return out
}

export interface CertFacts {
  /** derSerial of the serial number. */
  serial: string
  notBefore: number
  notAfter: number
  extensions: Map<string, Extension>
  /** The subject Name's DER content (hex), to match a CRL's issuer name byte for byte. */
  subject: string
}

/** Serial, validity and extensions of a DER certificate. */
export function certFacts (der: Buffer): CertFacts {
  const outer = tlv(der, 0)
  const tbs = children(der, outer)[0]
  if (tbs === undefined || tbs.tag !== 0x30) throw new Error('not a certificate')
  let fields = children(der, tbs)
  if (fields[0]?.tag === 0xa0) fields = fields.slice(1) // [0] version
  const [serial, , , validity, subject, , ...rest] = fields // serial, signature, issuer, validity, subject, spki
  if (serial?.tag !== 0x02 || validity?.tag !== 0x30 || subject?.tag !== 0x30) throw new Error('not a certificate')
  const [nb, na] = children(der, validity)
  if (nb === undefined || na === undefined) throw new Error('not a certificate')
  const exts = rest.find((f) => f.tag === 0xa3) // [3] extensions
  const list = exts === undefined ? undefined : children(der, exts)[0]
  return {
    serial: derSerial(der.subarray(serial.start, serial.end)),
    notBefore: time(der, nb),
    notAfter: time(der, na),
    extensions: list === undefined ? new Map() : extensions(der, list),
    subject: der.subarray(subject.start, subject.end).toString('hex'),
  }
}

/**
 * The validity check of every request, in both modes: notBefore <= now <= notAfter (RFC 5280
 * 4.1.2.5, both ends inclusive, as OpenSSL). 401 AOG_IDENTITY_REQUIRED outside.
 */
export function checkValidity (notBefore: number, notAfter: number, nowMs: number): void {
  if (!(nowMs >= notBefore && nowMs <= notAfter)) {
    throw new AogError('AOG_IDENTITY_REQUIRED', 'the client certificate is outside its validity dates')
  }
}

const EKU = '551d25' // 2.5.29.37
const KEY_USAGE = '551d0f' // 2.5.29.15
const NS_CERT_TYPE = '6086480186f8420101' // 2.16.840.1.113730.1.1
const CLIENT_AUTH = '2b06010505070302' // 1.3.6.1.5.5.7.3.2

/**
 * Whether a leaf may authenticate a TLS client, as OpenSSL's "ssl_client" purpose decides for
 * direct mode: extendedKeyUsage, when present, lists clientAuth; keyUsage, when present, has
 * digitalSignature or keyAgreement; a Netscape cert type, when present, has SSL client.
 */
export function clientAuthAllowed (exts: Map<string, Extension>): boolean {
  const eku = exts.get(EKU)
  if (eku !== undefined) {
    const seq = tlv(eku.value, 0)
    if (seq.tag !== 0x30) return false
    if (!children(eku.value, seq).some((o) => o.tag === 0x06 && eku.value.subarray(o.start, o.end).toString('hex') === CLIENT_AUTH)) return false
  }
  const bits = (e: Extension | undefined): number | undefined => {
    if (e === undefined) return undefined
    const s = tlv(e.value, 0)
    if (s.tag !== 0x03) return 0
    return s.end - s.start >= 2 ? e.value[s.start + 1]! : 0 // the first byte after the unused-bits count
  }
  const ku = bits(exts.get(KEY_USAGE))
  if (ku !== undefined && (ku & (0x80 | 0x08)) === 0) return false // digitalSignature | keyAgreement
  const ns = bits(exts.get(NS_CERT_TYPE))
  if (ns !== undefined && (ns & 0x80) === 0) return false // SSL client
  return true
}
