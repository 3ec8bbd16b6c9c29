/**
 * Fixtures of the attestation tests: real HTTPS JWKS servers (the dev CA's server certificate, so
 * that a gate trusts them with --attestation-jwks-ca certs/dev/ca.pem), issuers with real keys,
 * and tokens shaped like Google Confidential Space's and Azure Attestation's, signed locally.
 */
import type { Test } from 'tap'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { execFileSync } from 'node:child_process'
import { createPrivateKey, randomBytes, type KeyObject } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT, exportJWK, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import type { Counter } from 'prom-client'
import { keyPair } from '../helpers/keys.js'
import { DEV, ROOT, pem } from '../helpers/pki.js'
import { GateError, getChallenge, solve, submitTask, type AogAgent, type ChallengeResponse } from '../../lib/client/agent.js'

// A dev PKI made before the attestation files existed: certs/gen.sh adds just those.
if (!existsSync(join(DEV, 'attestation-jwks.json'))) execFileSync('bash', [join(ROOT, 'certs', 'gen.sh')], { stdio: 'ignore' })

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** How a JWKS server answers. */
export type JwksMode = 'ok' | 'error' | 'redirect' | 'slow' | 'stall-body' | 'huge' | 'huge-declared' | 'not-json'

export interface JwksServer {
  /** https://localhost:PORT */
  origin: string
  server: Server
  /** The document each path serves (mutable: rotation). */
  docs: Map<string, unknown>
  mode: JwksMode
  /** Delay before an ok answer (ms). */
  delayMs: number
  /** Requests per path. */
  hits: Map<string, number>
  url (path: string): string
  set (path: string, doc: unknown): void
}

/** An HTTPS JWKS server on 127.0.0.1 with the dev server certificate (or the rogue CA's, to be distrusted). */
export async function startJwksServer (t: Test, opts: { rogue?: boolean } = {}): Promise<JwksServer> {
  const s: JwksServer = {
    origin: '',
    server: undefined as unknown as Server,
    docs: new Map(),
    mode: 'ok',
    delayMs: 0,
    hits: new Map(),
    url: (path) => s.origin + path,
    set: (path, doc) => { s.docs.set(path, doc) },
  }
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = req.url ?? '/'
    s.hits.set(path, (s.hits.get(path) ?? 0) + 1)
    const doc = s.docs.get(path)
    switch (s.mode) {
      case 'error': res.writeHead(500).end('down'); return
      case 'redirect': res.writeHead(302, { location: s.origin + '/elsewhere' + path }).end(); return
      case 'slow': setTimeout(() => { if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc)) }, 5000).unref(); return
      case 'stall-body': res.writeHead(200, { 'content-type': 'application/json' }); res.write('{"keys":['); return
      case 'huge': {
        // Chunked, no length: the bound must hold while streaming.
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"keys":[],"padding":"')
        for (let i = 0; i < 64; i++) res.write('x'.repeat(16 * 1024))
        res.end('"}')
        return
      }
      case 'huge-declared': {
        const body = JSON.stringify({ ...(doc as object), padding: 'x'.repeat(1024 * 1024) })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
        return
      }
      case 'not-json': res.writeHead(200, { 'content-type': 'application/json' }).end('<html>'); return
      case 'ok': break
    }
    if (doc === undefined) { res.writeHead(404).end(); return }
    const answer = (): void => { if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc)) }
    if (s.delayMs > 0) setTimeout(answer, s.delayMs).unref()
    else answer()
  }
  const rogue = opts.rogue === true ? rogueServerCert() : undefined
  s.server = createServer({ cert: rogue?.cert ?? pem('server.pem'), key: rogue?.key ?? pem('server-key.pem') }, handle)
  await new Promise<void>((resolve) => s.server.listen(0, '127.0.0.1', resolve))
  s.origin = `https://localhost:${(s.server.address() as AddressInfo).port}`
  t.teardown(async () => {
    s.server.closeAllConnections()
    await new Promise<void>((resolve) => s.server.close(() => resolve()))
  })
  return s
}

/** A server certificate for localhost signed by the rogue CA (not the dev CA). */
function rogueServerCert (): { cert: Buffer, key: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'aog-rogue-'))
  // Self-signed: chains to nothing the gate trusts.
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'),
    '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' })
  return { cert: readFileSync(join(dir, 'c.pem')), key: readFileSync(join(dir, 'k.pem')) }
}

/** An issuer's signing key: its public JWK (with kid) and a signer. */
export interface IssuerKey {
  kid: string
  alg: string
  jwk: JWK
  privateKey: KeyObject | CryptoKey
  sign (claims: JWTPayload, header?: Record<string, unknown>): Promise<string>
}

export async function issuerKey (alg: 'RS256' | 'ES256' | 'EdDSA' = 'RS256', kid = randomBytes(8).toString('hex')): Promise<IssuerKey> {
  const { publicKey, privateKey } = alg === 'RS256' ? keyPair('rsa', { modulusLength: 2048 }) : alg === 'ES256' ? keyPair('ec', { namedCurve: 'P-256' }) : keyPair('ed25519')
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
  return {
    kid,
    alg,
    jwk,
    privateKey,
    sign: async (claims, header = {}) => await new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'JWT', ...header }).sign(privateKey),
  }
}

/**
 * An RSA key published the way Azure Attestation's /certs publishes it: only `x5c` (a self-signed
 * certificate), `kid` and `kty`, no `n`/`e`.
 */
export function certOnlyKey (kid = randomBytes(32).toString('base64')): IssuerKey {
  const dir = mkdtempSync(join(tmpdir(), 'aog-x5c-'))
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'),
    '-days', '2', '-subj', '/CN=aogtest.eus.attest.azure.net'], { stdio: 'ignore' })
  const der = execFileSync('openssl', ['x509', '-in', join(dir, 'c.pem'), '-outform', 'DER'])
  const privateKey = createPrivateKey(readFileSync(join(dir, 'k.pem')))
  return {
    kid,
    alg: 'RS256',
    jwk: { x5c: [der.toString('base64')], kid, kty: 'RSA' },
    privateKey,
    sign: async (claims, header = {}) => await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT', ...header }).sign(privateKey),
  }
}

export const CONFIDENTIAL_SPACE = 'https://confidentialcomputing.googleapis.com'
export const AZURE = 'https://aogtest.eus.attest.azure.net'
export const GATE_AUDIENCE = 'https://gate.aog.test'
export const IMAGE = 'sha256:' + 'a1'.repeat(32)

const nowS = (): number => Math.floor(Date.now() / 1000)

/** Claims shaped like a Confidential Space token requested with nonces [challenge nonce, F]. */
export function confidentialSpaceClaims (nonce: string, fingerprint: string, over: Record<string, unknown> = {}): JWTPayload {
  const iat = nowS()
  return {
    aud: GATE_AUDIENCE,
    iss: CONFIDENTIAL_SPACE,
    sub: 'https://www.googleapis.com/compute/v1/projects/aog-test/zones/us-central1-a/instances/agent-1',
    iat,
    nbf: iat,
    exp: iat + 3600,
    eat_nonce: [nonce, fingerprint],
    eat_profile: 'https://cloud.google.com/confidential-computing/confidential-space/docs/reference/token-claims',
    secboot: true,
    oemid: 11129,
    hwmodel: 'GCP_INTEL_TDX',
    swname: 'CONFIDENTIAL_SPACE',
    swversion: ['250301'],
    dbgstat: 'disabled-since-boot',
    attester_tcb: ['INTEL'],
    google_service_accounts: ['agent@aog-test.iam.gserviceaccount.com'],
    submods: {
      confidential_space: { support_attributes: ['LATEST', 'STABLE', 'USABLE'] },
      container: { image_reference: 'us-docker.pkg.dev/aog-test/agents/agent:latest', image_digest: IMAGE, restart_policy: 'Never', args: ['/agent'] },
      gce: { zone: 'us-central1-a', project_id: 'aog-test', project_number: '1234567890', instance_name: 'agent-1', instance_id: '42' },
    },
    ...over,
  }
}

/** Claims shaped like an Azure Attestation (SEV-SNP confidential VM) token with the binding in its client payload. */
export function azureClaims (nonce: string, fingerprint: string, over: Record<string, unknown> = {}): JWTPayload {
  const iat = nowS()
  return {
    exp: iat + 8 * 3600,
    iat,
    nbf: iat,
    iss: AZURE,
    jti: randomBytes(32).toString('hex'),
    secureboot: true,
    'x-ms-attestation-type': 'azurevm',
    'x-ms-azurevm-attestation-protocol-ver': '2.0',
    'x-ms-azurevm-debuggersdisabled': true,
    'x-ms-azurevm-kerneldebug-enabled': false,
    'x-ms-azurevm-ostype': 'Linux',
    'x-ms-isolation-tee': {
      'x-ms-attestation-type': 'sevsnpvm',
      'x-ms-compliance-status': 'azure-compliant-cvm',
      'x-ms-sevsnpvm-is-debuggable': false,
      'x-ms-sevsnpvm-launchmeasurement': 'ad'.repeat(48),
      'x-ms-sevsnpvm-bootloader-svn': 3,
    },
    'x-ms-policy-hash': randomBytes(32).toString('base64url'),
    'x-ms-runtime': {
      'client-payload': { nonce, aog_fingerprint: fingerprint },
      keys: [{ kid: 'TpmEphemeralEncryptionKey', kty: 'RSA', e: 'AQAB', n: 'AQAB', key_ops: ['encrypt'] }],
    },
    'x-ms-ver': '1.0',
    ...over,
  }
}

/** The policy of the two services, each tied to its JWKS URL. */
export function twoServicePolicy (googleJwks: string, azureJwks: string): Record<string, Record<string, unknown>> {
  return {
    [CONFIDENTIAL_SPACE]: {
      $jwks: googleJwks,
      $audience: GATE_AUDIENCE,
      $nonce: 'eat_nonce',
      $subject: 'eat_nonce',
      dbgstat: 'disabled-since-boot',
      swname: 'CONFIDENTIAL_SPACE',
      'submods.container.image_digest': [IMAGE, 'sha256:' + 'b2'.repeat(32)],
      'submods.confidential_space.support_attributes': 'STABLE',
    },
    [AZURE]: {
      $jwks: azureJwks,
      $nonce: 'x-ms-runtime.client-payload.nonce',
      $subject: 'x-ms-runtime.client-payload.aog_fingerprint',
      'x-ms-attestation-type': 'azurevm',
      'x-ms-azurevm-debuggersdisabled': true,
      'x-ms-isolation-tee.x-ms-attestation-type': 'sevsnpvm',
      'x-ms-isolation-tee.x-ms-compliance-status': 'azure-compliant-cvm',
      'x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable': false,
    },
  }
}

/** Write a JSON file in a fresh temporary directory; its path. */
export function writeJson (name: string, value: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'aog-att-')), name)
  writeFileSync(file, JSON.stringify(value))
  return file
}

export const DEV_CA = join(DEV, 'ca.pem')
export const DEV_ATTESTATION_KEY = join(DEV, 'attestation-key.pem')
export const DEV_ATTESTATION_JWKS = join(DEV, 'attestation-jwks.json')

/** A counter's total over the samples matching `labels`. */
export async function count (c: Counter<string>, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await c.get()
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0)
}

/** What the gate answered: 'accepted', or '<status> <code>', with ' retry=<s>' when Retry-After came, and the detail. */
export interface Answer { outcome: string, detail: string }

/**
 * One round with a token of the caller's making: challenge, solve, `make(challenge, F)`, submit.
 * `make` may return undefined to send no attestation.
 */
export async function submitWith (agent: AogAgent, make: (c: ChallengeResponse, fingerprint: string) => Promise<string | undefined>): Promise<Answer> {
  const c = await getChallenge(agent)
  const body = solve(c, agent.fingerprint)
  const token = await make(c, agent.fingerprint)
  try {
    await submitTask(agent, token === undefined ? body : { ...body, attestation: token })
    return { outcome: 'accepted', detail: '' }
  } catch (err) {
    if (!(err instanceof GateError)) throw err
    return { outcome: `${err.status} ${err.code}${err.retryAfter === undefined ? '' : ` retry=${err.retryAfter}`}`, detail: String(err.problem?.detail ?? '') }
  }
}
