/** Verifications batched per event-loop turn (lib/webbotauth/verify-batch.ts). */
import t from 'tap'
import { sign } from 'node:crypto'
import { keyPair } from '../../helpers/keys.js'
import { ed25519Verifier } from '../../../lib/webbotauth/ed25519.js'
import { verifyInBatch } from '../../../lib/webbotauth/verify-batch.js'

t.test('the verifications of one turn run together after it, each answered for its own signature; a later turn is a new batch', async (t) => {
  const { privateKey, publicKey } = keyPair('ed25519')
  const other = keyPair('ed25519').publicKey
  const data = Buffer.from('"@method": GET')
  const good = sign(null, data, privateKey)
  const tampered = Buffer.from(good)
  tampered[0]! ^= 1
  const verifier = ed25519Verifier()
  const real = verifier.verify.bind(verifier)
  const calls: number[] = []
  let turn = 0
  verifier.verify = (d, k, s) => { calls.push(turn); return real(d, k, s) }
  t.teardown(() => { verifier.verify = real })
  const settled: string[] = []
  const answers = [
    verifyInBatch(data, publicKey, good),
    verifyInBatch(data, publicKey, tampered),
    verifyInBatch(data, other, good),
    verifyInBatch(Buffer.from('"@method": POST'), publicKey, good),
    verifyInBatch(data, publicKey, good.subarray(0, 63)),
  ].map(async (p, i) => { const ok = await p; settled.push(`${i}`); return ok })
  await Promise.resolve()
  t.same(calls, [], 'nothing verified within the turn that asked')
  t.same(settled, [])
  t.same(await Promise.all(answers), [true, false, false, false, false], 'each answer is its own signature\'s')
  t.same(calls, [0, 0, 0, 0, 0], 'five verifications, in one batch')
  turn = 1
  t.equal(await verifyInBatch(data, publicKey, good), true)
  t.same(calls, [0, 0, 0, 0, 0, 1], 'a later turn: a batch of its own')
})

t.test('a verifier that throws refuses its own job only (fail closed)', async (t) => {
  const { privateKey, publicKey } = keyPair('ed25519')
  const data = Buffer.from('x')
  const good = sign(null, data, privateKey)
  const verifier = ed25519Verifier()
  const real = verifier.verify.bind(verifier)
  let n = 0
  verifier.verify = (d, k, s) => { if (n++ === 0) throw new Error('boom'); return real(d, k, s) }
  t.teardown(() => { verifier.verify = real })
  t.same(await Promise.all([verifyInBatch(data, publicKey, good), verifyInBatch(data, publicKey, good)]), [false, true])
})
