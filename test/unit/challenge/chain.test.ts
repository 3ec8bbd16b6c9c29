import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { checkShape, initialDigest, isNonce, iterateTs, solveChain, traceHash } from '../../../lib/challenge/chain.js'
import { generate } from '../../../lib/challenge/sha256-link.gen.js'

const fixtures = new URL('../../fixtures/vectors/', import.meta.url)
const shared = new URL('../../../../shared/vectors/', import.meta.url)

interface ChainVector {
  seed: string, nonce: string, client_fingerprint: string, iterations: number, checkpoint_interval: number
  h0: string, result_hash: string, checkpoints: string[], trace_hash: string
}
const file = JSON.parse(readFileSync(new URL('sha256-chain-v1.json', fixtures), 'utf8')) as { algorithm: string, vectors: ChainVector[] }

t.test('the copied vectors are still those of shared/vectors', async (t) => {
  for (const name of ['sha256-chain-v1.json', 'forward-signature-v1.json']) {
    const there = new URL(name, shared)
    if (!existsSync(there)) {
      t.comment(`NOTE: ../shared/vectors/${name} is not beside this clone; checked the copy only`)
      continue
    }
    t.equal(readFileSync(new URL(name, fixtures), 'utf8'), readFileSync(there, 'utf8'), name)
  }
})

t.test('every chain vector is reproduced: h0, result, checkpoints and trace hash', async (t) => {
  t.equal(file.algorithm, 'sha256-chain-v1')
  t.ok(file.vectors.length >= 4)
  for (const v of file.vectors) {
    const name = `N=${v.iterations} k=${v.checkpoint_interval}`
    t.equal(initialDigest(v.seed, v.nonce, v.client_fingerprint).toString('hex'), v.h0, `${name} h0`)
    const s = solveChain(v, v.client_fingerprint)
    t.equal(s.result_hash, v.result_hash, `${name} result`)
    t.same(s.checkpoints, v.checkpoints, `${name} checkpoints`)
    t.equal(s.trace_hash, v.trace_hash, `${name} trace`)
  }
})

t.test('the TypeScript link agrees with node:crypto on random digests and lengths', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 0, max: 300 }), (start, n) => {
    const d = new Uint8Array(start)
    iterateTs(d, n)
    let ref = Buffer.from(start)
    for (let i = 0; i < n; i++) ref = createHash('sha256').update(ref).digest()
    return Buffer.from(d).equals(ref)
  }), { numRuns: 300 })
  t.pass('300 random cases agree')
})

t.test('the committed unrolled link is exactly the generator\'s output', async (t) => {
  t.equal(readFileSync(new URL('../../../lib/challenge/sha256-link.ts', import.meta.url), 'utf8'), generate())
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
  t.throws(() => iterateTs(new Uint8Array(31), 1), RangeError)
  t.equal(traceHash([]).toString('hex'), createHash('sha256').digest('hex'))
})
