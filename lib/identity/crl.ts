/**
 * Just enough of RFC 5280 CRLs: the revoked serial numbers, the update times, and the signature
 * checked against the agent CA with node:crypto. Hand-written rather than pkijs: a CRL needs a DER
 * walk of a dozen lines and node:crypto already verifies the signature; pkijs 4 (a fresh major)
 * would add a dependency tree for that.
 */
import { verify, type X509Certificate } from 'node:crypto'

interface Tlv { tag: number, start: number, end: number, next: number }

function tlv (b: Buffer, at: number): Tlv {
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
  return { tag, start, end, next: end }
}

function children (b: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = []
  for (let at = parent.start; at < parent.end;) {
    const c = tlv(b, at)
    out.push(c)
    at = c.next
  }
  return out
}

function time (b: Buffer, t: Tlv): number {
  const s = b.subarray(t.start, t.end).toString('latin1')
  const m = t.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s)
  if (m === null) throw new Error('bad time in CRL')
  let year = Number(m[1])
  if (t.tag === 0x17) year += year < 50 ? 2000 : 1900
  return Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]))
}

/** Normalised serial: uppercase hex without leading zeros (as X509Certificate.serialNumber, normalised). */
export function normalSerial (hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '')
}

// DER-encoded OIDs of the signature algorithms we accept → hash for crypto.verify (null: Ed25519).
const SIG_ALGS: Record<string, string | null> = {
  '2a8648ce3d040302': 'sha256', // ecdsa-with-SHA256
  '2a8648ce3d040303': 'sha384',
  '2a8648ce3d040304': 'sha512',
  '2a864886f70d01010b': 'sha256', // sha256WithRSAEncryption
  '2a864886f70d01010c': 'sha384',
  '2a864886f70d01010d': 'sha512',
  '2b6570': null, // Ed25519
}

export interface Crl {
  /** Revoked serials, normalised. */
  serials: Set<string>
  thisUpdate: number
  nextUpdate: number | undefined
  /** The CA whose key verified the signature. */
  issuer: X509Certificate
}

/**
 * Parse a CRL (PEM or DER) and verify its signature with one of `cas`. Throws when the CRL is
 * malformed or signed by none of them.
 */
export function parseCrl (data: Buffer, cas: X509Certificate[]): Crl {
  const text = data.toString('latin1')
  const pem = /-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/.exec(text)
  const der = pem === null ? data : Buffer.from(pem[1]!.replace(/\s+/g, ''), 'base64')
  const outer = tlv(der, 0)
  const [tbs, alg, sig] = children(der, outer)
  if (tbs === undefined || alg === undefined || sig === undefined || tbs.tag !== 0x30 || sig.tag !== 0x03) throw new Error('not a CRL')
  const oid = children(der, alg)[0]
  if (oid === undefined || oid.tag !== 0x06) throw new Error('not a CRL')
  const oidHex = der.subarray(oid.start, oid.end).toString('hex')
  if (!(oidHex in SIG_ALGS)) throw new Error('unsupported CRL signature algorithm')
  const hash = SIG_ALGS[oidHex]!
  const signature = der.subarray(sig.start + 1, sig.end) // skip the unused-bits byte
  // The signed bytes are the whole tbsCertList TLV, the first child of the outer SEQUENCE.
  const tbsBytes = der.subarray(outer.start, tbs.end)
  const issuer = cas.find((ca) => {
    try {
      return verify(hash, tbsBytes, ca.publicKey, signature)
    } catch {
      return false
    }
  })
  if (issuer === undefined) throw new Error('the CRL is not signed by a configured CA')

  let fields = children(der, tbs)
  if (fields[0]?.tag === 0x02) fields = fields.slice(1) // version
  const [, , thisU, maybeNext, ...rest] = fields // signature alg, issuer, thisUpdate, nextUpdate?
  if (thisU === undefined) throw new Error('not a CRL')
  let nextUpdate: number | undefined
  let remaining = rest
  if (maybeNext !== undefined && (maybeNext.tag === 0x17 || maybeNext.tag === 0x18)) nextUpdate = time(der, maybeNext)
  else if (maybeNext !== undefined) remaining = [maybeNext, ...rest]
  const serials = new Set<string>()
  const revoked = remaining.find((f) => f.tag === 0x30)
  if (revoked !== undefined) {
    for (const entry of children(der, revoked)) {
      const serial = children(der, entry)[0]
      if (serial === undefined || serial.tag !== 0x02) throw new Error('bad CRL entry')
      serials.add(normalSerial(der.subarray(serial.start, serial.end).toString('hex')))
    }
  }
  return { serials, thisUpdate: time(der, thisU), nextUpdate, issuer }
}
