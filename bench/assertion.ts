/**
 * bench:assertion — microseconds per X-AOG-Agent token (docs/protocol.md section 7) for Ed25519 and
 * P-256, next to a baseline measured in the same run: one bare `crypto.sign` of a token's signing
 * input. Compared: the hand-made JWS the gate uses (cached header, node:crypto), the gate's whole
 * `sign()` (claims and jti included), jose's CompactSign and SignJWT (cached KeyObject; jose signs
 * through WebCrypto) and the callback form of crypto.sign (libuv thread pool). Tokens are made one
 * after another, as a request waits for its own; CPU is the whole process's (thread pool included).
 *   npm run bench:assertion [-- --signs N --rounds R]   (or node dist/bench/assertion.js after npm run build)
 */
import { sign as cryptoSign, type KeyObject } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CompactSign, SignJWT } from 'jose'
import { cnfOf, createAssertionSigner, encodedHeaderOf, loadAssertionKeys, signCompact, ASSERTION_TYP, type AssertionKey } from '../lib/assertion.js'
import { keyPair } from '../test/helpers/keys.js'
import { benchArgs } from './args.js'
import { machine, median, table } from './util.js'

const values = benchArgs('bench:assertion', 'Microseconds per X-AOG-Agent token (Ed25519, P-256): node:crypto against jose, next to a bare crypto.sign measured in the same run.', {
  signs: { type: 'number', default: 2000, help: 'tokens per round and implementation' },
  rounds: { type: 'number', default: 7, help: 'rounds per implementation (the median is shown)' },
})
const N = values.signs
const R = values.rounds

// Keys as the gate loads them: written to files, read by loadAssertionKeys.
const dir = mkdtempSync(join(tmpdir(), 'aog-bench-assertion-'))
const files: Record<string, string> = {}
for (const [name, type, opts] of [['Ed25519', 'ed25519', {}], ['P-256', 'ec', { namedCurve: 'P-256' }]] as const) {
  const { privateKey } = keyPair(type, opts)
  files[name] = join(dir, `${name}.pem`)
  writeFileSync(files[name], privateKey.export({ type: 'pkcs8', format: 'pem' }))
}

const FINGERPRINT = 'ab'.repeat(32)
const claims = { sub: FINGERPRINT, htm: 'GET', htu: '/api/v1/items?page=2&sort=name', cnf: cnfOf({ fingerprint: FINGERPRINT }), grant_exp: Date.now() + 300_000 }
const payload = { iss: 'aog', aud: 'https://upstream.example', ...claims, iat: 1_700_000_000, exp: 1_700_000_030, jti: 'q2Vh3b0mTn4sVxj6a1Zk8w' }
const payloadBytes = new TextEncoder().encode(JSON.stringify(payload))

function rawSign (key: AssertionKey, data: Buffer): Buffer {
  return key.alg === 'EdDSA' ? cryptoSign(null, data, key.privateKey) : cryptoSign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
}
function rawSignAsync (key: AssertionKey, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, sig: Buffer): void => { if (err === null) resolve(sig); else reject(err) }
    if (key.alg === 'EdDSA') cryptoSign(null, data, key.privateKey, done)
    else cryptoSign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' }, done)
  })
}

type Impl = () => unknown
const BASELINE = 'crypto.sign of the signing input (baseline)'
function impls (key: AssertionKey): Record<string, Impl> {
  const header = encodedHeaderOf(key)
  const input = Buffer.from(`${header}.${Buffer.from(payloadBytes).toString('base64url')}`)
  const signer = createAssertionSigner({ keys: { keys: [key] }, issuer: 'aog', audience: 'https://upstream.example', ttlSeconds: 30 })
  const pk: KeyObject = key.privateKey
  const protectedHeader = { alg: key.alg, kid: key.kid, typ: ASSERTION_TYP }
  return {
    [BASELINE]: () => rawSign(key, input),
    'hand-made JWS, node:crypto (cached header)': () => signCompact(header, payload, key),
    'gate sign(): claims + jti + hand-made JWS': () => signer.sign(claims),
    'jose CompactSign (cached KeyObject)': () => new CompactSign(payloadBytes).setProtectedHeader(protectedHeader).sign(pk),
    'jose SignJWT (cached KeyObject)': () => new SignJWT(payload).setProtectedHeader(protectedHeader).sign(pk),
    'crypto.sign callback (thread pool)': () => rawSignAsync(key, input),
  }
}

/** Wall and CPU microseconds per call of `fn`, awaited one after another. */
async function measure (fn: Impl): Promise<{ wall: number, cpu: number }> {
  const c0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) await fn()
  const wall = Number(process.hrtime.bigint() - t0) / 1000 / N
  const c = process.cpuUsage(c0)
  return { wall, cpu: (c.user + c.system) / N }
}

console.log(`bench:assertion  ${machine()}  ${N} tokens per round, ${R} rounds, median`)
const keys = loadAssertionKeys([files['Ed25519']!, files['P-256']!]).keys
for (const key of keys) {
  const set = impls(key)
  // Warm up every implementation (JIT, jose's CryptoKey cache), then interleave rounds so noise hits all alike.
  for (const fn of Object.values(set)) for (let i = 0; i < 200; i++) await fn()
  const wall: Record<string, number[]> = Object.fromEntries(Object.keys(set).map((k) => [k, []]))
  const cpu: Record<string, number[]> = Object.fromEntries(Object.keys(set).map((k) => [k, []]))
  for (let r = 0; r < R; r++) {
    for (const [name, fn] of Object.entries(set)) {
      const m = await measure(fn)
      wall[name]!.push(m.wall)
      cpu[name]!.push(m.cpu)
    }
  }
  const base = median(wall[BASELINE]!)
  console.log(`\n${key.alg === 'EdDSA' ? 'Ed25519 (EdDSA)' : 'P-256 (ES256)'}`)
  console.log(table(Object.keys(set).map((name) => {
    const w = median(wall[name]!)
    return {
      implementation: name,
      'µs/token': w.toFixed(1),
      'CPU µs/token': median(cpu[name]!).toFixed(1),
      'time vs baseline': `${(w / base).toFixed(2)}x`,
    }
  })))
}
rmSync(dir, { recursive: true, force: true })
