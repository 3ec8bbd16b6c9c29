/**
 * The two Ed25519 verifiers (libsodium, node:crypto) give the same answers, the gate picks libsodium
 * unless AOG_NATIVE=0, and keys anyone could sign for (small order, non-canonical) are refused.
 */
import t from 'tap'
import { createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import { ed25519Verifier, loadSodiumVerifier, nodeCryptoVerifier, weakEd25519Key, type Ed25519Verifier } from '../../../lib/webbotauth/ed25519.js'
import { directoryKeys } from '../../../lib/webbotauth/directory.js'
import { keyPair } from '../../helpers/keys.js'

const native = process.env.AOG_NATIVE !== '0'
const sodium = loadSodiumVerifier()
if (native && sodium.verifier === undefined) t.fail(`libsodium did not load: ${sodium.reason}`)
const verifiers: Ed25519Verifier[] = [nodeCryptoVerifier, ...(sodium.verifier === undefined ? [] : [sodium.verifier])]

function keyOf (x: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: x.toString('base64url') }, format: 'jwk' })
}

t.test('the gate verifies with libsodium, node:crypto under AOG_NATIVE=0', async (t) => {
  t.equal(ed25519Verifier().name, native ? 'libsodium' : 'node:crypto')
  t.equal(sodium.reason, native ? 'loaded' : 'disabled by AOG_NATIVE=0')
})

t.test('libsodium missing or failing its self-test: node:crypto is used', async (t) => {
  if (!native) {
    let loaded = false
    t.match(loadSodiumVerifier(() => { loaded = true; return {} }), { verifier: undefined, reason: 'disabled by AOG_NATIVE=0' })
    t.notOk(loaded, 'AOG_NATIVE=0: sodium-native is not even loaded')
    return
  }
  t.match(loadSodiumVerifier(() => { throw Object.assign(new Error('nope'), { code: 'MODULE_NOT_FOUND' }) }), { verifier: undefined, reason: /not installed \(MODULE_NOT_FOUND\)/ })
  t.match(loadSodiumVerifier(() => ({ crypto_sign_verify_detached: () => true })), { verifier: undefined, reason: 'self-test failed' })
  t.match(loadSodiumVerifier(() => ({ crypto_sign_verify_detached: () => false })), { verifier: undefined, reason: 'self-test failed' })
  t.match(loadSodiumVerifier(() => ({ crypto_sign_verify_detached: () => { throw new TypeError('bad') } })), { verifier: undefined, reason: 'self-test threw (bad)' })
})

t.test('both verifiers: RFC 8032 test 1, and 300 random keys with good, tampered and malformed signatures', async (t) => {
  const rfcKey = keyOf(Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex'))
  const rfcSig = Buffer.from('e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b', 'hex')
  for (const v of verifiers) {
    t.ok(v.verify(Buffer.alloc(0), rfcKey, rfcSig), `${v.name}: RFC 8032 test 1`)
    t.notOk(v.verify(Buffer.from('x'), rfcKey, rfcSig), `${v.name}: another message`)
  }
  let disagreements = 0
  let accepted = 0
  for (let i = 0; i < 300; i++) {
    const { publicKey, privateKey } = keyPair('ed25519')
    const other = keyPair('ed25519').publicKey
    const data = randomBytes(i % 7 === 0 ? 0 : 1 + (i % 600))
    const good = sign(null, data, privateKey)
    const flipped = Buffer.from(good)
    flipped[i % 64]! ^= 1 << (i % 8)
    const highS = Buffer.from(good)
    highS[63]! |= 0xe0 // S >= L: not canonical
    const alteredData = Buffer.concat([data, Buffer.from([i & 0xff])])
    const cases: Array<[Buffer, KeyObject, Buffer, boolean]> = [
      [data, publicKey, good, true],
      [data, publicKey, flipped, false],
      [data, publicKey, highS, false],
      [alteredData, publicKey, good, false],
      [data, other, good, false],
      [data, publicKey, good.subarray(0, 63), false],
      [data, publicKey, Buffer.concat([good, Buffer.alloc(1)]), false],
      [data, publicKey, Buffer.alloc(0), false],
    ]
    for (const [d, k, s, expected] of cases) {
      const answers = verifiers.map((v) => v.verify(d, k, s))
      if (answers.some((a) => a !== expected)) disagreements++
      if (answers.every((a) => a)) accepted++
    }
  }
  t.equal(disagreements, 0, `${verifiers.map((v) => v.name).join(' and ')} agree with the expected answer on 2,400 cases`)
  t.equal(accepted, 300, 'exactly the 300 good signatures are accepted')
  // A private key stands for its public half, in both.
  const { publicKey, privateKey } = keyPair('ed25519')
  const good = sign(null, Buffer.from('x'), privateKey)
  for (const v of verifiers) t.ok(v.verify(Buffer.from('x'), privateKey, good) && v.verify(Buffer.from('x'), publicKey, good), `${v.name}: a private key verifies as its public half`)
  // A key of another type never throws (sodium-native throws on a key that is not 32 bytes).
  const ed448 = keyPair('ed448')
  const sig448 = Buffer.alloc(64)
  for (const v of verifiers) t.equal(v.verify(Buffer.from('x'), ed448.publicKey, sig448), false, `${v.name}: an Ed448 key is false, not a throw`)
})

// Ed25519: -x^2 + y^2 = 1 + d x^2 y^2 over p = 2^255 - 19, to derive the small-order points here
// rather than trust the module's list.
const P = 2n ** 255n - 19n
const mod = (a: bigint): bigint => ((a % P) + P) % P
const pow = (b: bigint, e: bigint): bigint => { let r = 1n; b = mod(b); for (; e > 0n; e >>= 1n, b = mod(b * b)) if ((e & 1n) === 1n) r = mod(r * b); return r }
const inv = (a: bigint): bigint => pow(a, P - 2n)
const D = mod(-121665n * inv(121666n))
type Point = [bigint, bigint]
const add = ([x1, y1]: Point, [x2, y2]: Point): Point => {
  const k = mod(D * x1 * x2 * y1 * y2)
  return [mod((x1 * y2 + x2 * y1) * inv(1n + k)), mod((y1 * y2 + x1 * x2) * inv(1n - k))]
}
const encode = ([x, y]: Point): Buffer => {
  const b = Buffer.alloc(32)
  let v = y | ((x & 1n) << 255n)
  for (let i = 0; i < 32; i++, v >>= 8n) b[i] = Number(v & 0xffn)
  return b
}

t.test('weak keys: all eight small-order points (derived here) and the non-canonical encodings; no generated key', async (t) => {
  // A point of order 8: x^2 = (y^2 - 1) / (d y^2 + 1) with y from the curve's 8-torsion.
  const y8 = BigInt('0x' + Buffer.from('26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'hex').reverse().toString('hex'))
  const x2 = mod((y8 * y8 - 1n) * inv(D * y8 * y8 + 1n))
  let x8 = pow(x2, (P + 3n) / 8n)
  if (mod(x8 * x8 - x2) !== 0n) x8 = mod(x8 * pow(2n, (P - 1n) / 4n))
  t.equal(mod(x8 * x8 - x2), 0n, 'on the curve')
  const torsion: Point[] = []
  let q: Point = [x8, y8]
  for (let i = 0; i < 8; i++) { torsion.push(q); q = add(q, [x8, y8]) }
  t.same(torsion[7], [0n, 1n], '8 P = identity')
  t.equal(new Set(torsion.map((p) => encode(p).toString('hex'))).size, 8, 'eight distinct points')
  for (const p of torsion) {
    const e = encode(p)
    t.ok(weakEd25519Key(e), `small order: ${e.toString('hex').slice(0, 8)}…`)
    const signFlipped = Buffer.from(e)
    signFlipped[31]! ^= 0x80
    t.ok(weakEd25519Key(signFlipped), 'with the other sign bit')
  }
  for (let low = 0xed; low <= 0xff; low++) {
    const e = Buffer.alloc(32, 0xff)
    e[0] = low
    e[31] = 0x7f
    t.ok(weakEd25519Key(e), `y = p + ${low - 0xed} is not canonical`)
  }
  t.ok(weakEd25519Key(Buffer.alloc(31)), 'not 32 bytes')
  for (const [name, y] of [['p - 2', P - 2n], ['2^248 - 1', 2n ** 248n - 1n], ['2', 2n]] as const) {
    const e = Buffer.alloc(32)
    let v = y
    for (let i = 0; i < 32; i++, v >>= 8n) e[i] = Number(v & 0xffn)
    t.notOk(weakEd25519Key(e), `y = ${name} is canonical and not of small order`)
  }
  let weak = 0
  for (let i = 0; i < 500; i++) {
    const x = Buffer.from(String(keyPair('ed25519').publicKey.export({ format: 'jwk' }).x), 'base64url')
    if (weakEd25519Key(x)) weak++
  }
  t.equal(weak, 0, 'none of 500 generated keys')
})

t.test('why: node:crypto accepts signatures made without a secret under small-order keys, libsodium does not, and directories skip such keys', async (t) => {
  const identity = Buffer.alloc(32)
  identity[0] = 1
  // R = the identity, S = 0: [S]B = R + [k]A holds whenever [k]A is the identity, for every
  // message under the identity key, and for about one message in ord(A) under the other small-order keys.
  const forged = Buffer.alloc(64)
  forged[0] = 1
  const messages = Array.from({ length: 64 }, (_, i) => Buffer.from(`message ${i}`))
  const key = keyOf(identity)
  t.equal(messages.filter((m) => verify(null, m, key, forged)).length, 64, 'OpenSSL, the identity key: every message')
  // Of order 8, 2 and 4.
  const others = ['26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', '0000000000000000000000000000000000000000000000000000000000000000'].map((y) => keyOf(Buffer.from(y, 'hex')))
  let underOthers = 0
  for (const other of others) {
    for (const m of messages) {
      if (verify(null, m, other, forged)) underOthers++
      if (sodium.verifier !== undefined && sodium.verifier.verify(m, other, forged)) t.fail('libsodium accepted a forgery')
    }
  }
  t.ok(underOthers > 0, `OpenSSL, keys of order 2, 4 and 8: ${underOthers} of ${3 * messages.length} messages`)
  if (sodium.verifier !== undefined) t.notOk(sodium.verifier.verify(Buffer.from('any message'), key, forged), 'libsodium: refused')
  t.equal(directoryKeys({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: identity.toString('base64url') }] }).size, 0, 'the identity key is not kept')
  const good = keyPair('ed25519').publicKey.export({ format: 'jwk' })
  const keys = directoryKeys({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: identity.toString('base64url') }, { kty: 'OKP', crv: 'Ed25519', x: good.x }] })
  t.equal(keys.size, 1, 'only the good key is kept')
})
