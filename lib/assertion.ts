/**
 * The identity assertion `X-AOG-Agent` (docs/protocol.md section 7): a compact JWS the gate signs
 * for every allowed protected request, so that the upstream learns who the agent is without trusting
 * anything else the client sent. Its keys are Ed25519 (EdDSA) or P-256 (ES256) private keys, one per
 * file (PEM or private JWK): the first signs, all are published as a JWKS (rotation, in
 * docs/operations.md: publish the new key second until verifiers' caches hold it, then move it first).
 *
 * Header `{"alg", "kid", "typ": "aog-agent+jwt"}` (explicit typing, RFC 8725 section 3.11), `kid` the
 * RFC 7638 thumbprint of the public key. Claims: iss, aud, sub (F), iat, exp, jti, htm, htu, cnf,
 * grant_exp (ms). Error messages name the file and the reason, never key material.
 */
import { createPrivateKey, sign as cryptoSign, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { jwkThumbprint, publicJwk } from './keys.js'
import { RandomPool } from './random.js'

export type AssertionAlg = 'EdDSA' | 'ES256'

/** A published key: public members only. */
export interface AssertionPublicJwk {
  kty: 'OKP' | 'EC'
  crv: 'Ed25519' | 'P-256'
  x: string
  y?: string
  kid: string
  alg: AssertionAlg
  use: 'sig'
}

export interface AssertionKey {
  /** The file it was loaded from (for messages). */
  file: string
  kid: string
  alg: AssertionAlg
  privateKey: KeyObject
  jwk: AssertionPublicJwk
}

/** Loaded keys: `keys[0]` signs, every key is published. */
export interface AssertionKeys {
  keys: readonly [AssertionKey, ...AssertionKey[]]
}

export interface AssertionClaims {
  /** F, the caller's fingerprint. */
  sub: string
  /** The original method. */
  htm: string
  /** The original path with query. */
  htu: string
  cnf: Record<string, string>
  /** When the grant expires (ms since the epoch). */
  grant_exp: number
}

export interface AssertionSignerOptions {
  keys: AssertionKeys
  issuer: string
  audience: string
  /** exp - iat, 1 to 60 s. */
  ttlSeconds: number
  /** Clock in ms since the epoch (default Date.now). */
  now?: () => number
}

export interface AssertionSigner {
  kid: string
  alg: AssertionAlg
  /** The JWKS of every loaded key (a frozen object, the same one on every call). */
  jwks: () => { keys: readonly AssertionPublicJwk[] }
  sign: (claims: AssertionClaims) => string
}

export const ASSERTION_TYP = 'aog-agent+jwt'
const ASSERTION_MAX_TTL_SECONDS = 60

const ALLOWED = 'only Ed25519 (EdDSA) and P-256 (ES256) private keys are allowed'
const ENCRYPTED = 'is an encrypted private key (give it unencrypted and protect the file)'

function keyError (file: string, reason: string): Error {
  return new Error(`assertion key ${file}: ${reason}`)
}

/**
 * Load the assertion keys, synchronously (start-up). Throws an Error naming the file and the reason
 * for a file that cannot be read, is not a private key, is of another type, or repeats a key.
 */
export function loadAssertionKeys (files: string[]): AssertionKeys {
  if (files.length === 0) throw new Error('assertion key: no key file given')
  const keys: AssertionKey[] = []
  for (const file of files) {
    const k = loadKey(file)
    const same = keys.find((x) => x.kid === k.kid)
    if (same !== undefined) throw keyError(file, `is the same key as ${same.file}`)
    keys.push(k)
  }
  return { keys: keys as [AssertionKey, ...AssertionKey[]] }
}

function loadKey (file: string): AssertionKey {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw keyError(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  const trimmed = text.trim()
  const privateKey = trimmed.startsWith('{') || trimmed.startsWith('[') ? fromJwk(file, trimmed) : fromPem(file, trimmed)
  return assertionKey(file, privateKey, algOf(file, privateKey))
}

/** A signing key of `alg` with its kid (RFC 7638 thumbprint) and its public JWK. */
export function assertionKey (file: string, privateKey: KeyObject, alg: AssertionAlg, pub = publicJwk(privateKey)): AssertionKey {
  const kid = jwkThumbprint(pub)
  const jwk: AssertionPublicJwk = alg === 'EdDSA'
    ? { kty: 'OKP', crv: 'Ed25519', x: pub.x!, kid, alg, use: 'sig' }
    : { kty: 'EC', crv: 'P-256', x: pub.x!, y: pub.y!, kid, alg, use: 'sig' }
  return { file, kid, alg, privateKey, jwk }
}

function fromPem (file: string, text: string): KeyObject {
  const labels = [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]!)
  if (labels.length === 0) throw keyError(file, 'is neither a PEM private key nor a JWK')
  if (labels.includes('ENCRYPTED PRIVATE KEY')) throw keyError(file, ENCRYPTED)
  if (!labels.some((l) => l.endsWith('PRIVATE KEY'))) {
    throw keyError(file, labels.some((l) => l.includes('PUBLIC KEY') || l.includes('CERTIFICATE')) ? 'holds a public key or certificate, not a private key' : 'holds no PEM private key')
  }
  try {
    return createPrivateKey({ key: text, format: 'pem' })
  } catch (err) {
    // Node's message is not repeated: only its code, which never quotes the file.
    const code = (err as { code?: string }).code
    throw keyError(file, code === 'ERR_MISSING_PASSPHRASE' ? ENCRYPTED : `is not a readable PEM private key${code === undefined ? '' : ` (${code})`}`)
  }
}

function fromJwk (file: string, text: string): KeyObject {
  let jwk: unknown
  try {
    jwk = JSON.parse(text)
  } catch {
    // JSON.parse's message quotes the text around the error: never repeated.
    throw keyError(file, 'is not valid JSON')
  }
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw keyError(file, 'is not a JWK (a JSON object)')
  const j = jwk as Record<string, unknown>
  if ('keys' in j) throw keyError(file, 'is a JWK set: give one private JWK per file')
  const kind = j.kty === 'OKP' && j.crv === 'Ed25519' ? 'EdDSA' : j.kty === 'EC' && j.crv === 'P-256' ? 'ES256' : undefined
  if (kind === undefined) throw keyError(file, `is a JWK of another type (${describeJwk(j)}): ${ALLOWED}`)
  if (j.d === undefined) throw keyError(file, 'is a public JWK (no "d"): a private key is required')
  if (j.alg !== undefined && j.alg !== kind) throw keyError(file, `its "alg" does not match its key (${kind} expected)`)
  if (j.use !== undefined && j.use !== 'sig') throw keyError(file, 'its "use" is not "sig"')
  try {
    return createPrivateKey({ key: j as JsonWebKey, format: 'jwk' })
  } catch {
    throw keyError(file, 'is not a valid private JWK')
  }
}

/** kty/crv of a JWK for a message, limited to the names a JWK may carry. */
function describeJwk (j: Record<string, unknown>): string {
  const name = (v: unknown): string => typeof v === 'string' && /^[A-Za-z0-9-]{1,16}$/.test(v) ? v : '?'
  return j.crv === undefined ? `kty ${name(j.kty)}` : `kty ${name(j.kty)}, crv ${name(j.crv)}`
}

function algOf (file: string, key: KeyObject): AssertionAlg {
  const type = key.asymmetricKeyType
  if (type === 'ed25519') return 'EdDSA'
  const curve = key.asymmetricKeyDetails?.namedCurve
  if (type === 'ec' && curve === 'prime256v1') return 'ES256'
  const what = type === 'rsa' || type === 'rsa-pss' ? 'an RSA key' : type === 'ec' ? `an EC key on ${curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : curve ?? 'an unknown curve'}` : `a ${type ?? 'unknown'} key`
  throw keyError(file, `is ${what}: ${ALLOWED}`)
}

/** The JWKS text of the key files, for `aog-server jwks`: pretty JSON ending in a newline. */
export function jwksCommand (files: string[]): string {
  return JSON.stringify({ keys: loadAssertionKeys(files).keys.map((k) => k.jwk) }, null, 2) + '\n'
}

/**
 * The `cnf` claim of an identity: `x5t#S256` (the certificate's SHA-256) for a certificate, `jkt`
 * (the key's RFC 7638 thumbprint) for a signature key (section 8); F is that hash in hex either way.
 */
export function cnfOf (identity: { fingerprint: string, kind?: 'certificate' | 'signature-key' }): Record<string, string> {
  if (!/^[0-9a-f]{64}$/i.test(identity.fingerprint)) throw new Error('cnfOf: the fingerprint is not 64 hex digits')
  const b64 = Buffer.from(identity.fingerprint, 'hex').toString('base64url')
  return identity.kind === 'signature-key' ? { jkt: b64 } : { 'x5t#S256': b64 }
}

/**
 * Compact JWS over a cached encoded header, signed with node:crypto: jose signs through WebCrypto,
 * which hops to the thread pool and costs several times as much per token (bench/assertion.ts).
 */
export function signCompact (encodedHeader: string, payload: object, key: AssertionKey): string {
  const input = `${encodedHeader}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
  const sig = key.alg === 'EdDSA'
    ? cryptoSign(null, Buffer.from(input), key.privateKey)
    : cryptoSign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
  return `${input}.${sig.toString('base64url')}`
}

/** The protected header of a key, base64url-encoded. */
export function encodedHeaderOf (key: AssertionKey): string {
  return Buffer.from(JSON.stringify({ alg: key.alg, kid: key.kid, typ: ASSERTION_TYP })).toString('base64url')
}

export function createAssertionSigner (opts: AssertionSignerOptions): AssertionSigner {
  const { issuer, audience, ttlSeconds } = opts
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > ASSERTION_MAX_TTL_SECONDS) {
    throw new Error(`assertion ttlSeconds must be an integer from 1 to ${ASSERTION_MAX_TTL_SECONDS}`)
  }
  if (issuer === '' || audience === '') throw new Error('assertion issuer and audience must not be empty')
  const now = opts.now ?? Date.now
  const key = opts.keys.keys[0]
  const header = encodedHeaderOf(key)
  const jwks = Object.freeze({ keys: Object.freeze(opts.keys.keys.map((k) => Object.freeze({ ...k.jwk }))) })
  // jti: 16 bytes of the CSPRNG, base64url, drawn from a pre-filled pool.
  const random = new RandomPool()
  return {
    kid: key.kid,
    alg: key.alg,
    jwks: () => jwks,
    sign: (c) => {
      const iat = Math.floor(now() / 1000)
      return signCompact(header, {
        iss: issuer,
        aud: audience,
        sub: c.sub,
        iat,
        exp: iat + ttlSeconds,
        jti: random.nonce(),
        htm: c.htm,
        htu: c.htu,
        cnf: c.cnf,
        grant_exp: c.grant_exp,
      }, key)
    },
  }
}
