/**
 * Just enough of RFC 5280 CRLs: the revoked serial numbers, the update times, and the signature
 * checked against the agent CA with node:crypto. Hand-written rather than pkijs: a CRL needs a DER
 * walk of a few dozen lines and node:crypto already verifies the signature; pkijs 4 (a fresh major)
 * would add a dependency tree for that.
 *
 * One loader (loadCrls) serves both uses: the per-request list and the TLS context (which takes
 * PEM only, so DER input is re-encoded). A file may hold several CRLs (one per agent CA), PEM
 * blocks or DER back to back. Only complete CRLs are taken (RFC 5280 5.2): a delta CRL, an unknown
 * critical extension (CRL or entry) or an issuing distribution point that narrows the scope is
 * refused, and the caller keeps the previous list.
 */
import { verify, type X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { certFacts, children, derSerial, extensions, time, tlv } from './der.js'

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

// CRL extensions (OID DER content hex) understood here; any other one marked critical refuses the CRL.
const DELTA_CRL_INDICATOR = '551d1b'
const ISSUING_DISTRIBUTION_POINT = '551d1c'
const KNOWN_CRL_EXTENSIONS = new Set([
  '551d23', // authorityKeyIdentifier
  '551d12', // issuerAltName
  '551d14', // cRLNumber
  ISSUING_DISTRIBUTION_POINT,
  '551d2e', // freshestCRL
  '2b06010505070101', // authorityInfoAccess
])
// Entry extensions: reasonCode, invalidityDate. certificateIssuer (indirect CRL) is not supported.
const KNOWN_ENTRY_EXTENSIONS = new Set(['551d15', '551d18'])

export interface Crl {
  /** Revoked serials, as derSerial gives them. */
  serials: Set<string>
  thisUpdate: number
  nextUpdate: number | undefined
  /** The CA whose name is the CRL's issuer and whose key verified its signature. */
  issuer: X509Certificate
  /** The CRL's own DER bytes. */
  der: Buffer
}

/** The CRLs of a file: every PEM "X509 CRL" block, or DER structures back to back. */
function splitCrls (data: Buffer): Buffer[] {
  const text = data.toString('latin1')
  const blocks = [...text.matchAll(/-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/g)]
  if (blocks.length > 0) return blocks.map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'))
  if (text.includes('-----BEGIN')) throw new Error('no X509 CRL block in the PEM file')
  const out: Buffer[] = []
  for (let at = 0; at < data.length;) {
    const t = tlv(data, at)
    if (t.tag !== 0x30) throw new Error('not a CRL')
    out.push(data.subarray(at, t.end))
    at = t.end
  }
  if (out.length === 0) throw new Error('empty CRL file')
  return out
}

/** PEM text of a DER CRL (what the TLS context takes). */
export function crlPem (der: Buffer): string {
  return `-----BEGIN X509 CRL-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END X509 CRL-----\n`
}

/** The issuing distribution point is acceptable when it only says "user certificates only". */
function fullScope (value: Buffer): boolean {
  const seq = tlv(value, 0)
  if (seq.tag !== 0x30) return false
  return children(value, seq).every((f) => f.tag === 0x81) // [1] onlyContainsUserCerts
}

/** A CRL whose issuer name is none of the configured CAs' (it can revoke nothing the gate trusts). */
class UnknownIssuerError extends Error {}

/** The configured CA a CRL belongs to: same subject name (DER bytes) and its key verifies the signature. */
function issuerOf (cas: X509Certificate[], name: string, hash: string | null, tbs: Buffer, signature: Buffer): X509Certificate {
  const named = cas.filter((ca) => certFacts(ca.raw).subject === name)
  if (named.length === 0) throw new UnknownIssuerError('the CRL is not signed by a configured CA (no agent CA has its issuer name)')
  const issuer = named.find((ca) => {
    try {
      return verify(hash, tbs, ca.publicKey, signature)
    } catch {
      return false
    }
  })
  if (issuer === undefined) throw new Error('the CRL is not signed by a configured CA (its issuer\'s key does not verify the signature)')
  return issuer
}

/**
 * Parse one CRL (PEM or DER; the first of a file) and verify it against one of `cas`: same issuer
 * name, and that CA's key verifies the signature. Throws when it is malformed, not a complete CRL,
 * of no configured CA (UnknownIssuerError) or badly signed.
 */
export function parseCrl (data: Buffer, cas: X509Certificate[]): Crl {
  const der = splitCrls(data)[0]!
  const outer = tlv(der, 0)
  if (outer.end !== der.length) throw new Error('trailing bytes after the CRL')
  const [tbs, alg, sig] = children(der, outer)
  if (tbs === undefined || alg === undefined || sig === undefined || tbs.tag !== 0x30 || sig.tag !== 0x03) throw new Error('not a CRL')
  const oid = children(der, alg)[0]
  if (oid === undefined || oid.tag !== 0x06) throw new Error('not a CRL')
  const hash = SIG_ALGS[der.subarray(oid.start, oid.end).toString('hex')]
  if (hash === undefined) throw new Error('unsupported CRL signature algorithm')
  const signature = der.subarray(sig.start + 1, sig.end) // skip the unused-bits byte
  // The signed bytes are the whole tbsCertList TLV, the first child of the outer SEQUENCE.
  const tbsBytes = der.subarray(outer.start, tbs.end)
  let fields = children(der, tbs)
  if (fields[0]?.tag === 0x02) fields = fields.slice(1) // version
  const [, name, thisU, ...rest] = fields // signature alg, issuer, thisUpdate, then nextUpdate?, revoked?, extensions?
  if (thisU === undefined || name?.tag !== 0x30) throw new Error('not a CRL')
  const issuer = issuerOf(cas, der.subarray(name.start, name.end).toString('hex'), hash, tbsBytes, signature)
  const next = rest[0]
  const nextUpdate = next !== undefined && (next.tag === 0x17 || next.tag === 0x18) ? time(der, next) : undefined

  const crlExts = rest.find((f) => f.tag === 0xa0) // [0] crlExtensions
  const list = crlExts === undefined ? undefined : children(der, crlExts)[0]
  if (list !== undefined) {
    for (const [key, ext] of extensions(der, list)) {
      if (key === DELTA_CRL_INDICATOR) throw new Error('a delta CRL is not a complete list')
      if (key === ISSUING_DISTRIBUTION_POINT && !fullScope(ext.value)) throw new Error('a CRL of partial scope (issuing distribution point) is not a complete list')
      if (ext.critical && !KNOWN_CRL_EXTENSIONS.has(key)) throw new Error(`the CRL has an unknown critical extension (${key})`)
    }
  }

  const serials = new Set<string>()
  const revoked = rest.find((f) => f.tag === 0x30)
  if (revoked !== undefined) {
    for (const entry of children(der, revoked)) {
      const [serial, , entryExts] = children(der, entry)
      if (serial === undefined || serial.tag !== 0x02) throw new Error('bad CRL entry')
      if (entryExts !== undefined) {
        for (const [key, ext] of extensions(der, entryExts)) {
          if (ext.critical && !KNOWN_ENTRY_EXTENSIONS.has(key)) throw new Error(`a CRL entry has an unknown critical extension (${key})`)
        }
      }
      serials.add(derSerial(der.subarray(serial.start, serial.end)))
    }
  }
  return { serials, thisUpdate: time(der, thisU), nextUpdate, issuer, der: Buffer.from(der) }
}

export interface CrlSet {
  crls: Crl[]
  /** Every revoked serial of every CRL of the file. */
  serials: Set<string>
  /** The revoked serials by issuing CA (its fingerprint256); a CA without a CRL is absent. */
  revokedBy: Map<string, Set<string>>
  /** Where each CRL skipped because no configured CA has its issuer name is (`CRL #2`, `<file> CRL #1`). */
  skipped: string[]
  /** The PEM of each CRL, for the TLS context. */
  pems: string[]
  /** The earliest nextUpdate of the set (undefined: none has one). */
  nextUpdate: number | undefined
}

/** CRL files of a --crl directory: its *.pem, *.crl, *.der and `openssl rehash` *.r0… files (not hidden ones), by name. */
export function crlDirectoryFiles (dir: string): string[] {
  return readdirSync(dir).filter((f) => /^[^.].*\.(pem|crl|der|r[0-9]+)$/i.test(f)).sort().map((f) => join(dir, f)).filter((f) => statSync(f).isFile())
}

/** A CRL (DER) and where it comes from, for messages: `CRL #2` of a file, `<file> CRL #2` of a directory. */
interface CrlItem { der: Buffer, where: string }

function numbered (data: Buffer, prefix = ''): CrlItem[] {
  return splitCrls(data).map((der, i) => ({ der, where: `${prefix}CRL #${i + 1}` }))
}

/** The CRLs (DER) of --crl: a file, or every CRL file of a directory. */
export function readCrlSource (path: string): CrlItem[] {
  if (!statSync(path).isDirectory()) return numbered(readFileSync(path))
  const files = crlDirectoryFiles(path)
  if (files.length === 0) throw new Error('no *.pem, *.crl or *.der file in the CRL directory')
  return files.flatMap((f) => {
    try {
      return numbered(readFileSync(f), `${f} `)
    } catch (err) {
      throw new Error(`${f}: ${(err as Error).message}`)
    }
  })
}

/**
 * Load CRLs (a file's bytes, PEM or DER, one or several; or readCrlSource's list): each must parse
 * and verify against the CA with its issuer name, or it throws. A CRL whose issuer name is no
 * configured CA's is skipped (listed in `skipped`): it revokes nothing the gate trusts, and a CA
 * rotation may publish the new CA's CRL first. At least one CRL must be of a configured CA.
 */
export function loadCrls (data: Buffer | CrlItem[], cas: X509Certificate[]): CrlSet {
  const items = Buffer.isBuffer(data) ? numbered(data) : data
  const newest = new Map<string, Crl[]>()
  const skipped: string[] = []
  for (const { der, where } of items) {
    try {
      // Of several CRLs of one CA (dated files side by side), the newest (latest thisUpdate) is in
      // force; CRLs of the same thisUpdate all are (their revocations together: fail closed).
      const c = parseCrl(der, cas)
      const held = newest.get(c.issuer.fingerprint256)
      if (held === undefined || c.thisUpdate > held[0]!.thisUpdate) newest.set(c.issuer.fingerprint256, [c])
      else if (c.thisUpdate === held[0]!.thisUpdate) held.push(c)
    } catch (err) {
      if (err instanceof UnknownIssuerError) skipped.push(where)
      else throw new Error(`${where}: ${(err as Error).message}`)
    }
  }
  const crls = [...newest.values()].flat()
  if (crls.length === 0) throw new Error(`no CRL of a configured agent CA (${skipped.join(', ')}: the CRL is not signed by a configured CA)`)
  const revokedBy = new Map<string, Set<string>>()
  for (const [ca, held] of newest) revokedBy.set(ca, new Set(held.flatMap((c) => [...c.serials])))
  const serials = new Set([...revokedBy.values()].flatMap((s) => [...s]))
  const nexts = crls.map((c) => c.nextUpdate).filter((n): n is number => n !== undefined)
  return {
    crls,
    serials,
    revokedBy,
    skipped,
    pems: crls.map((c) => crlPem(c.der)),
    nextUpdate: nexts.length === 0 ? undefined : Math.min(...nexts),
  }
}
