/**
 * CRLs of the dev CA made on demand: with openssl (an empty one, to be "updated" to
 * certs/dev/crl.pem), or built byte by byte for the edge cases openssl will not make.
 */
import { execFileSync } from 'node:child_process'
import { createPrivateKey, sign, X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEV } from './pki.js'
import { children, tlv, type Tlv } from '../../lib/identity/der.js'
import { crlPem } from '../../lib/identity/crl.js'

/** A valid CRL of the dev CA listing no certificate. */
export function emptyCrl (): string {
  const dir = mkdtempSync(join(tmpdir(), 'aog-crl-'))
  writeFileSync(join(dir, 'index.txt'), '')
  writeFileSync(join(dir, 'crlnumber'), '2000\n')
  writeFileSync(join(dir, 'ca.cnf'), `[ ca ]\ndefault_ca = dev\n[ dev ]\ndatabase = ${dir}/index.txt\ncrlnumber = ${dir}/crlnumber\ncertificate = ${DEV}/ca.pem\nprivate_key = ${DEV}/ca-key.pem\ndefault_md = sha256\ndefault_crl_days = 30\n`)
  const out = join(dir, 'crl.pem')
  execFileSync('openssl', ['ca', '-batch', '-config', join(dir, 'ca.cnf'), '-gencrl', '-out', out], { stdio: 'ignore' })
  return out
}

/** DER TLV with a definite length. */
export function der (tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts)
  const n = body.length
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : n < 0x10000 ? Buffer.from([0x82, n >> 8, n & 0xff]) : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff])
  return Buffer.concat([Buffer.from([tag]), len, body])
}

/** DER content of an OBJECT IDENTIFIER in dotted form. */
export function oid (dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number)
  const out = [40 * arcs[0]! + arcs[1]!]
  for (const a of arcs.slice(2)) {
    const bytes = [a & 0x7f]
    for (let v = Math.floor(a / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift((v & 0x7f) | 0x80)
    out.push(...bytes)
  }
  return der(0x06, Buffer.from(out))
}

/** The minimal two's complement bytes of an integer (the content of its DER INTEGER). */
export function intBytes (n: bigint): Buffer {
  let hex = (n < 0n ? (1n << 2048n) + n : n).toString(16)
  if (hex.length % 2 === 1) hex = '0' + hex
  let b = Buffer.from(hex, 'hex')
  if (n < 0n) {
    while (b.length > 1 && b[0] === 0xff && (b[1]! & 0x80) !== 0) b = b.subarray(1)
  } else if ((b[0]! & 0x80) !== 0) {
    b = Buffer.concat([Buffer.from([0]), b])
  }
  return b
}

function gtime (d: Date): Buffer {
  const s = d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z')
  return d.getUTCFullYear() < 2050 ? der(0x17, Buffer.from(s.slice(2), 'latin1')) : der(0x18, Buffer.from(s, 'latin1'))
}

export interface CrlExtension { oid: string, critical?: boolean, value: Buffer }

function exts (list: CrlExtension[]): Buffer {
  return der(0x30, ...list.map((e) => der(0x30, oid(e.oid), ...(e.critical === true ? [der(0x01, Buffer.from([0xff]))] : []), der(0x04, e.value))))
}

/**
 * A CRL built here, byte by byte, and signed with a CA's key (ECDSA P-256 with SHA-256): any
 * serial (negative ones too), update times, CRL and entry extensions. DER, or PEM with `pem`.
 */
export function buildCrl (opts: {
  ca?: { cert: Buffer, key: Buffer }
  revoked?: Array<{ serial: bigint | Buffer, extensions?: CrlExtension[] }>
  thisUpdate?: Date
  nextUpdate?: Date | null
  extensions?: CrlExtension[]
  pem?: boolean
} = {}): Buffer {
  const ca = opts.ca ?? { cert: readFileSync(join(DEV, 'ca.pem')), key: readFileSync(join(DEV, 'ca-key.pem')) }
  const caDer = new X509Certificate(ca.cert).raw
  // The issuer name: the CA certificate's subject (the sixth field of its tbsCertificate).
  const tbsCert = children(caDer, children(caDer, tlv(caDer, 0))[0]!)
  const name = tbsCert[5]!
  const nameDer = caDer.subarray(nameStart(name), name.end)
  const alg = der(0x30, oid('1.2.840.10045.4.3.2'))
  const thisUpdate = opts.thisUpdate ?? new Date(Date.now() - 60_000)
  const nextUpdate = opts.nextUpdate === undefined ? new Date(Date.now() + 86400_000) : opts.nextUpdate
  const entries = (opts.revoked ?? []).map((r) => der(0x30,
    der(0x02, typeof r.serial === 'bigint' ? intBytes(r.serial) : r.serial),
    gtime(new Date(Date.now() - 120_000)),
    ...(r.extensions === undefined ? [] : [exts(r.extensions)])))
  const tbs = der(0x30,
    der(0x02, Buffer.from([1])), // v2
    alg,
    nameDer,
    gtime(thisUpdate),
    ...(nextUpdate === null ? [] : [gtime(nextUpdate)]),
    ...(entries.length === 0 ? [] : [der(0x30, ...entries)]),
    ...(opts.extensions === undefined || opts.extensions.length === 0 ? [] : [der(0xa0, exts(opts.extensions))]))
  const signature = sign('sha256', tbs, createPrivateKey(ca.key))
  const crl = der(0x30, tbs, alg, der(0x03, Buffer.from([0]), signature))
  return opts.pem === true ? Buffer.from(crlPem(crl)) : crl
}

/** Where the TLV `t` (whose content starts at t.start) itself starts: its tag byte. */
function nameStart (t: Tlv): number {
  const len = t.end - t.start
  return t.start - (len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : 5)
}

/** Write a CRL to a fresh file; its path. */
export function crlFile (data: Buffer | string, name = 'crl'): string {
  const file = join(mkdtempSync(join(tmpdir(), 'aog-crl-')), name)
  writeFileSync(file, data)
  return file
}
