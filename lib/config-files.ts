/**
 * The files a configuration names, checked before anything starts (aog-server and
 * `aog-server check-config`): each must be readable and parse as what it must be (certificates, a
 * private key matching its certificate, CRLs, secrets, keys, JWKS, allow lists), so that a bad one
 * is a configuration error naming its field (exit 2), never raw Node or OpenSSL text at start-up.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { PATH_OPTIONS, type Config, type Problem } from './config.js'
import { loadCrls, readCrlSource } from './identity/crl.js'
import { parseDenyList } from './identity/revocation.js'
import { loadAssertionKeys } from './assertion.js'
import { fileKeySource } from './attestation-jwks.js'
import { parseSignatureAgentsFile } from './webbotauth/directory.js'

export type { Problem }

type PathOption = typeof PATH_OPTIONS[number]
/** The path options as given (strings, or anything a raw configuration may hold). */
type ConfigPaths = Partial<Record<PathOption, unknown>>

/** Read a file, or throw an Error saying why in words (the errno code, not a stack). */
function read (file: string): Buffer {
  try {
    return readFileSync(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable (permission denied)' : code === 'EISDIR' ? 'is a directory, not a file' : `cannot be read (${code ?? 'error'})`
    throw new Error(`${file} ${why}`)
  }
}

/** Every certificate of a PEM bundle; throws when there is none or a block does not parse. */
function readCertificateFile (file: string): X509Certificate[] {
  const text = read(file).toString('latin1')
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) throw new Error(`${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b)
    } catch {
      throw new Error(`${file}: certificate #${i + 1} is not a valid PEM certificate`)
    }
  })
}

function readPrivateKey (file: string): KeyObject {
  const data = read(file)
  try {
    return createPrivateKey(data)
  } catch {
    throw new Error(`${file} is not an unencrypted PEM or DER private key`)
  }
}

/** The certificates of another option's file; undefined when it is unset or unusable (it reports its own problem). */
function certificatesOf (file: string | undefined): X509Certificate[] | undefined {
  try {
    return file === undefined ? undefined : readCertificateFile(file)
  } catch {
    return undefined
  }
}

/** The forward secrets as the gate reads them: one per line, 16 characters at least. */
function checkSecrets (file: string): void {
  const lines = read(file).toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  if (lines.length === 0) throw new Error(`${file} holds no secret`)
  if (lines.some((l) => l.length < 16)) throw new Error(`a secret in ${file} is shorter than 16 characters`)
}

/** The CRLs (a file, or a directory of CRL files) must parse and verify against the agent CAs. */
function checkCrl (path: string, clientCa: string | undefined): void {
  let dir = false
  try {
    dir = statSync(path).isDirectory()
  } catch {}
  if (dir) {
    try {
      readdirSync(path)
    } catch (err) {
      throw new Error(`${path} is a directory that cannot be listed (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
  } else read(path) // says why it cannot be read
  // Without a usable clientCa the signatures cannot be checked.
  const cas = certificatesOf(clientCa)
  try {
    const source = readCrlSource(path)
    if (cas !== undefined) loadCrls(source, cas)
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`)
  }
}

/** The allow list parses, and every JWKS file it pins is readable JSON. */
function checkSignatureAgents (file: string): void {
  const allow = parseSignatureAgentsFile(read(file).toString('utf8'), { baseDir: dirname(file), source: file })
  for (const a of allow) {
    if (a.file === undefined) continue
    try {
      JSON.parse(read(a.file).toString('utf8'))
    } catch (err) {
      throw new Error(err instanceof SyntaxError ? `${a.file} (pinned to ${a.url}) is not JSON` : `pinned to ${a.url}: ${(err as Error).message}`)
    }
  }
}

/** The check of each path option (devDir and attestationPolicy are checked elsewhere). */
function checkers (c: Record<string, string | undefined>): Partial<Record<PathOption, (v: string) => void>> {
  const bundle = (v: string): void => { readCertificateFile(v) }
  return {
    tlsCert: bundle,
    tlsKey: (v) => {
      const key = readPrivateKey(v)
      const cert = certificatesOf(c.tlsCert)?.[0]
      if (cert !== undefined && !cert.checkPrivateKey(key)) throw new Error(`${v} is not the private key of the certificate in ${c.tlsCert!}`)
    },
    clientCa: bundle,
    forwardProxyCa: bundle,
    attestationJwksCa: bundle,
    upstreamCa: bundle,
    signatureAgentsCa: bundle,
    crl: (v) => { checkCrl(v, c.clientCa) },
    denyFile: (v) => { parseDenyList(read(v).toString('utf8')) },
    forwardSecretFile: checkSecrets,
    attestationJwks: (v) => { read(v); fileKeySource(v) },
    assertionKey: (v) => {
      const files = v.split(',').map((f) => f.trim()).filter((f) => f !== '')
      for (const f of files) read(f)
      loadAssertionKeys(files)
    },
    signatureAgents: checkSignatureAgents,
  }
}

/** Every problem of the files the configuration names, one per field. */
export function configFileProblems (config: ConfigPaths): Problem[] {
  const c: Record<string, string | undefined> = {}
  for (const k of PATH_OPTIONS) {
    const v = config[k]
    if (typeof v === 'string' && v !== '') c[k] = v
  }
  const problems: Problem[] = []
  for (const [field, check] of Object.entries(checkers(c)) as Array<[PathOption, (v: string) => void]>) {
    const v = c[field]
    if (v === undefined) continue
    try {
      check(v)
    } catch (err) {
      problems.push({ field, message: (err as Error).message })
    }
  }
  return problems
}

/** A URL with its password (and any query, which may carry a token) masked. */
function maskUrl (u: string): string {
  try {
    const url = new URL(u)
    // The whole userinfo: some clients read a lone user name as the password.
    if (url.username === '' && url.password === '' && url.search === '') return u
    if (url.username !== '') url.username = '*****'
    if (url.password !== '') url.password = '*****'
    if (url.search !== '') url.search = '?*****'
    return url.toString()
  } catch {
    return '*****'
  }
}

/** The effective configuration to print: URLs with credentials masked; paths as they are. */
export function redactConfig (config: Readonly<Config>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config }
  for (const k of ['redisUrl', 'upstream', 'attestationJwksUrl'] as const) {
    const v = config[k]
    if (v !== undefined) out[k] = v.split(',').map(maskUrl).join(',')
  }
  return out
}
