import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { ALGORITHM, chainKey, checkShape, initialDigest, isNonce, iterateTs, solveChain, traceHash } from '../../../lib/chain/chain.js'
import { generate } from '../../../lib/chain/sha256-link.gen.js'
import { reference } from '../../helpers/chain-reference.js'

const fixtures = new URL('../../fixtures/vectors/', import.meta.url)
const shared = new URL('../../../../shared/vectors/', import.meta.url)

interface ChainVector {
  seed: string,
  nonce: string,
  client_fingerprint: string,
  iterations: number,
  checkpoint_interval: number
  h0: string,
  key: string,
  result_hash: string,
  checkpoints: string[],
  trace_hash: string
}
const file = JSON.parse(readFileSync(new URL('sha256-chain-v2.json', fixtures), 'utf8')) as { algorithm: string, vectors: ChainVector[] }

t.test('the copied vectors are still those of shared/vectors', async (t) => {
  for (const name of ['sha256-chain-v2.json', 'forward-signature-v1.json']) {
    const there = new URL(name, shared)
    if (!existsSync(there)) {
      t.comment(`NOTE: ../shared/vectors/${name} is not beside this clone; checked the copy only`)
      continue
    }
    t.equal(readFileSync(new URL(name, fixtures), 'utf8'), readFileSync(there, 'utf8'), name)
  }
})

t.test('every chain vector is reproduced: h0, key, result, checkpoints and trace hash', async (t) => {
  t.equal(file.algorithm, 'sha256-chain-v2')
  t.equal(ALGORITHM, 'sha256-chain-v2')
  t.ok(file.vectors.length >= 4)
  for (const v of file.vectors) {
    const name = `N=${v.iterations} k=${v.checkpoint_interval}`
    const h0 = initialDigest(v.seed, v.nonce, v.client_fingerprint)
    t.equal(h0.toString('hex'), v.h0, `${name} h0`)
    t.equal(chainKey(h0).toString('hex'), v.key, `${name} key`)
    const s = solveChain(v, v.client_fingerprint)
    t.equal(s.result_hash, v.result_hash, `${name} result`)
    t.same(s.checkpoints, v.checkpoints, `${name} checkpoints`)
    t.equal(s.trace_hash, v.trace_hash, `${name} trace`)
  }
})

t.test('the TypeScript link agrees with node:crypto on random digests, keys and lengths', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 0, max: 300 }), (start, key, n) => {
    const d = new Uint8Array(start)
    iterateTs(d, key, n)
    return Buffer.from(d).equals(reference(start, key, n))
  }), { numRuns: 300 })
  t.pass('300 random cases agree')
})

t.test('every link depends on the key: the same start with another key gives another chain', async (t) => {
  const start = randomBytes(32)
  const a = new Uint8Array(start)
  const b = new Uint8Array(start)
  iterateTs(a, chainKey(randomBytes(32)), 1)
  iterateTs(b, chainKey(randomBytes(32)), 1)
  t.notSame(Buffer.from(a), Buffer.from(b), 'one link under two keys differs')
  const z = new Uint8Array(start)
  iterateTs(z, Buffer.alloc(32), 1)
  t.same(Buffer.from(z), createHash('sha256').update(start).digest(), 'a zero key reduces to the plain link (sanity of the XOR)')
})

t.test('the committed unrolled link is exactly the generator\'s output', async (t) => {
  t.equal(readFileSync(new URL('../../../lib/chain/sha256-link.ts', import.meta.url), 'utf8'), generate())
})

t.test('malformed chain inputs are refused', async (t) => {
  const fp = 'ab'.repeat(32)
  const seed = 'cd'.repeat(32)
  const nonce = randomBytes(16).toString('base64url')
  t.throws(() => initialDigest('AB'.repeat(32), nonce, fp), RangeError, 'uppercase seed')
  t.throws(() => initialDigest(seed, nonce + 'A', fp), RangeError, 'long nonce')
  t.throws(() => initialDigest(seed, nonce, fp.slice(2)), RangeError, 'short fingerprint')
  t.notOk(isNonce('AAAAAAAAAAAAAAAAAAAAA/'), 'base64 (not url) alphabet')
  t.throws(() => checkShape(1000, 3), RangeError, 'k must divide N')
  t.throws(() => checkShape(2048, 1), RangeError, 'm at most 1024')
  t.throws(() => checkShape(0, 1), RangeError)
  t.throws(() => iterateTs(new Uint8Array(31), new Uint8Array(32), 1), RangeError)
  t.throws(() => iterateTs(new Uint8Array(32), new Uint8Array(31), 1), RangeError)
  t.throws(() => chainKey(new Uint8Array(31)), RangeError)
  t.equal(traceHash([]).toString('hex'), createHash('sha256').digest('hex'))
})
