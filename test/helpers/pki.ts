/** Paths of the dev PKI made by certs/gen.sh (npm test's pretest step runs it). */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const DEV = join(ROOT, 'certs', 'dev')

if (!existsSync(join(DEV, 'crl.pem')) || !existsSync(join(DEV, 'assertion-key.pem'))) execFileSync('bash', [join(ROOT, 'certs', 'gen.sh')], { stdio: 'ignore' })

export type AgentName = 'agent' | 'agent2' | 'rogue' | 'expired' | 'revoked'

export function pem (name: string): Buffer {
  return readFileSync(join(DEV, name))
}

export function agentFiles (name: AgentName): { cert: Buffer, key: Buffer, ca: Buffer } {
  return { cert: pem(`${name}.pem`), key: pem(`${name}-key.pem`), ca: pem('ca.pem') }
}

export interface Minted {
  dir: string
  certFile: string
  keyFile: string
  cert: Buffer
  key: Buffer
  /** The CA that signed it (PEM), for the agent's trust of the gate: always the dev CA. */
  ca: Buffer
}

/** openssl's UTCTime form for `openssl ca -startdate/-enddate` (YYMMDDHHMMSSZ). */
function utc (d: Date): string {
  return d.toISOString().replace(/^\d\d(\d\d)-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d).*$/, '$1$2$3$4$5$6Z')
}

const EXTS: Record<string, string> = {
  agent: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  server: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  'agent-no-ku': 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyEncipherment\nextendedKeyUsage=clientAuth\n',
  'agent-no-eku': 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n',
}

/**
 * A new certificate (fresh P-256 key) signed by a CA of the tests (the dev CA unless `issuer` is
 * given), with the extensions of `profile`, valid from `notBefore` (default an hour ago) to
 * `notAfter` (default a day ahead), to the second, signed by `openssl ca`; `san` replaces the
 * subjectAltName (e.g. DNS:localhost for a server certificate). With `serial` (e.g. -5)
 * it is signed by `openssl x509 -req` instead, valid from now for two days.
 */
export function mintCert (opts: { name?: string, profile?: keyof typeof EXTS, serial?: string, notBefore?: Date, notAfter?: Date, issuer?: { certFile: string, keyFile: string }, san?: string } = {}): Minted {
  const dir = mkdtempSync(join(tmpdir(), 'aog-mint-'))
  const name = opts.name ?? 'minted'
  const issuer = opts.issuer ?? { certFile: join(DEV, 'ca.pem'), keyFile: join(DEV, 'ca-key.pem') }
  const keyFile = join(dir, `${name}-key.pem`)
  const certFile = join(dir, `${name}.pem`)
  const ext = join(dir, 'ext.cnf')
  writeFileSync(ext, `[ ext ]\n${EXTS[opts.profile ?? 'agent']}subjectAltName=${opts.san ?? `URI:spiffe://aog.dev/agent/${name}`}\n`)
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyFile], { stdio: 'ignore' })
  execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/O=AOG test/CN=${name}`, '-out', join(dir, 'csr.pem')], { stdio: 'ignore' })
  if (opts.serial === undefined) {
    writeFileSync(join(dir, 'index.txt'), '')
    writeFileSync(join(dir, 'serial'), `${randomBytes(8).toString('hex').replace(/^./, '1')}\n`)
    writeFileSync(join(dir, 'ca.cnf'), `[ ca ]\ndefault_ca = t\n[ t ]\ndatabase = ${dir}/index.txt\nnew_certs_dir = ${dir}\nserial = ${dir}/serial\ncertificate = ${issuer.certFile}\nprivate_key = ${issuer.keyFile}\ndefault_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n[ any ]\ncommonName = supplied\norganizationName = optional\n`)
    const nb = opts.notBefore ?? new Date(Date.now() - 3600_000)
    const na = opts.notAfter ?? new Date(Date.now() + 86400_000)
    execFileSync('openssl', ['ca', '-batch', '-config', join(dir, 'ca.cnf'), '-extfile', ext, '-extensions', 'ext', '-startdate', utc(nb), '-enddate', utc(na), '-notext', '-in', join(dir, 'csr.pem'), '-out', certFile], { stdio: 'ignore' })
  } else {
    execFileSync('openssl', ['x509', '-req', '-in', join(dir, 'csr.pem'), '-CA', issuer.certFile, '-CAkey', issuer.keyFile, '-set_serial', opts.serial, '-extfile', ext, '-extensions', 'ext', '-days', '2', '-sha256', '-out', certFile], { stdio: 'ignore' })
  }
  return { dir, certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile), ca: pem('ca.pem') }
}

export interface MintedCa { certFile: string, keyFile: string, cert: Buffer, key: Buffer }

/**
 * A new CA (P-256), for tests with several agent CAs: self-signed, or with `issuer` an issuing
 * (intermediate) CA signed by that CA, with a random serial, as a two-tier PKI has.
 */
export function mintCa (name: string, opts: { issuer?: { certFile: string, keyFile: string } } = {}): MintedCa {
  const dir = mkdtempSync(join(tmpdir(), 'aog-ca-'))
  const keyFile = join(dir, 'ca-key.pem')
  const certFile = join(dir, 'ca.pem')
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyFile], { stdio: 'ignore' })
  const exts = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']
  if (opts.issuer === undefined) {
    execFileSync('openssl', ['req', '-x509', '-new', '-key', keyFile, '-sha256', '-days', '30', '-subj', `/O=AOG test/CN=${name}`, ...exts, '-out', certFile], { stdio: 'ignore' })
  } else {
    const ext = join(dir, 'ext.cnf')
    writeFileSync(ext, '[ ext ]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n')
    execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/O=AOG test/CN=${name}`, '-out', join(dir, 'csr.pem')], { stdio: 'ignore' })
    execFileSync('openssl', ['x509', '-req', '-in', join(dir, 'csr.pem'), '-CA', opts.issuer.certFile, '-CAkey', opts.issuer.keyFile, '-set_serial', `0x${randomBytes(8).toString('hex').replace(/^./, '1')}`,
      '-extfile', ext, '-extensions', 'ext', '-days', '30', '-sha256', '-out', certFile], { stdio: 'ignore' })
  }
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) }
}

/**
 * A two-tier agent PKI: a root, an issuing CA under it, and `bundle`, the file with both (what
 * --client-ca names).
 */
export function mintTwoTier (name = 'two-tier'): { root: MintedCa, issuing: MintedCa, bundle: string } {
  const root = mintCa(`${name} root`)
  const issuing = mintCa(`${name} issuing CA`, { issuer: root })
  const bundle = join(mkdtempSync(join(tmpdir(), 'aog-ca-')), 'agent-cas.pem')
  writeFileSync(bundle, Buffer.concat([root.cert, issuing.cert]))
  return { root, issuing, bundle }
}
