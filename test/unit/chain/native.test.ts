import t from 'tap'
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fc from 'fast-check'
import { loadNative } from '../../../lib/chain/native.js'
import { selectChain } from '../../../lib/chain/select.js'
import { ALGORITHM, chainKey, initialDigest, iterateTs, solveChain, typescriptChain } from '../../../lib/chain/chain.js'
import { solveAsync } from '../../../lib/client/agent.js'
import { reference } from '../../helpers/chain-reference.js'

const disabled = process.env.AOG_NATIVE === '0'

const { addon, reason } = loadNative()

t.test('the native chain is built and loaded (npm install builds it; AOG_NATIVE=0 disables it)', async (t) => {
  if (disabled) {
    t.equal(addon, undefined, 'disabled')
    t.equal((await selectChain()).name, 'typescript', 'the gate falls back to the TypeScript chain')
    await t.rejects(selectChain('native'), /unavailable/)
    return
  }
  t.ok(addon !== undefined, `the addon loads (${reason}); run npm run build:native`)
  t.equal((await selectChain()).name, 'native')
  t.equal((await selectChain('typescript')).name, 'typescript')
})

t.test('native: every chain vector, through iterate, chain and chainAsync', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/sha256-chain-v2.json', import.meta.url), 'utf8')) as { vectors: Array<{ seed: string, nonce: string, client_fingerprint: string, iterations: number, checkpoint_interval: number, result_hash: string, checkpoints: string[], trace_hash: string }> }
  const native = (await selectChain('native'))
  for (const x of v.vectors) {
    const s = solveChain(x, x.client_fingerprint, native)
    t.equal(s.result_hash, x.result_hash)
    t.equal(s.trace_hash, x.trace_hash)
    const h0 = initialDigest(x.seed, x.nonce, x.client_fingerprint)
    const all = addon!.chain(h0, chainKey(h0), x.iterations, x.checkpoint_interval)
    t.same(Array.from({ length: all.length / 32 }, (_, i) => all.subarray(i * 32, i * 32 + 32).toString('hex')), x.checkpoints)
    const body = await solveAsync({ ...x, algorithm: ALGORITHM, issued_at: 0, deadline_ts: 0 }, x.client_fingerprint)
    t.match(body, { result_hash: x.result_hash, trace_hash: x.trace_hash, checkpoints: x.checkpoints })
  }
})

t.test('native and TypeScript agree on random inputs (property)', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 0, max: 2000 }), (start, key, n) => {
    const a = new Uint8Array(start)
    const b = new Uint8Array(start)
    const c = new Uint8Array(start)
    addon!.iterate(a, key, n)
    iterateTs(b, key, n)
    addon!.opensslIterate(c, key, n)
    const d = reference(start, key, Math.min(n, 50))
    const e = new Uint8Array(start)
    iterateTs(e, key, Math.min(n, 50))
    return Buffer.from(a).equals(Buffer.from(b)) && Buffer.from(c).equals(Buffer.from(b)) && d.equals(Buffer.from(e))
  }), { numRuns: 500 })
  const key = chainKey(Buffer.alloc(32, 7))
  t.same(addon!.opensslLoop(key, 1000), reference(new Uint8Array(32), key, 1000), 'the OpenSSL baseline loop computes the same keyed chain')
  // The key may be the digest's own buffer: the addon copies it first.
  const same = new Uint8Array(key)
  addon!.iterate(same, same, 3)
  t.same(Buffer.from(same), reference(key, key, 3), 'a key aliasing the digest is read before the digest changes')
  t.same(solveChain({ seed: 'ab'.repeat(32), nonce: 'AAAAAAAAAAAAAAAAAAAAAA', iterations: 4096, checkpoint_interval: 64 }, 'cd'.repeat(32), await selectChain('native')),
    solveChain({ seed: 'ab'.repeat(32), nonce: 'AAAAAAAAAAAAAAAAAAAAAA', iterations: 4096, checkpoint_interval: 64 }, 'cd'.repeat(32), typescriptChain))
})

const cpuHasShaNi = process.arch === 'x64' && /^flags\s*:.*\bsha_ni\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'))

t.test('native: the SHA-NI kernel where the CPU has the SHA extensions, OpenSSL otherwise or on request', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  t.equal(addon!.kernel, cpuHasShaNi ? 'sha-ni' : 'openssl', `this CPU ${cpuHasShaNi ? 'has' : 'lacks'} sha_ni`)
  // Long chains too: both kernels from the same start, against node:crypto.
  const start = createHash('sha256').update('aog').digest()
  const key = chainKey(start)
  const a = new Uint8Array(start)
  const b = new Uint8Array(start)
  addon!.iterate(a, key, 100_000)
  addon!.opensslIterate(b, key, 100_000)
  const ref = reference(start, key, 100_000)
  t.same(Buffer.from(a), ref, 'iterate: 100000 links equal node:crypto')
  t.same(Buffer.from(b), ref, 'opensslIterate: 100000 links equal node:crypto')
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', [
    "const { loadNative } = await import('./dist/lib/chain/native.js')",
    "const { solveChain } = await import('./dist/lib/chain/chain.js')",
    "const { selectChain } = await import('./dist/lib/chain/select.js')",
    "const x = JSON.parse((await import('node:fs')).readFileSync('test/fixtures/vectors/sha256-chain-v2.json', 'utf8')).vectors[0]",
    "const s = solveChain(x, x.client_fingerprint, await selectChain('native'))",
    'console.log(JSON.stringify({ kernel: loadNative().addon.kernel, ok: s.result_hash === x.result_hash && s.trace_hash === x.trace_hash }))',
  ].join('\n')], { env: { ...process.env, AOG_CHAIN_KERNEL: 'openssl' }, encoding: 'utf8' })
  t.same(JSON.parse(r.stdout.trim() || '{}'), { kernel: 'openssl', ok: true }, `AOG_CHAIN_KERNEL=openssl: the OpenSSL kernel passes the vectors ${r.stderr}`)
})

t.test('native: bad arguments are refused, not a crash', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  const k = new Uint8Array(32)
  t.throws(() => addon!.iterate(new Uint8Array(31), k, 1), RangeError)
  t.throws(() => addon!.iterate(new Uint8Array(32), new Uint8Array(31), 1), RangeError)
  t.throws(() => (addon!.iterate as unknown as (d: Uint8Array, n: number) => void)(new Uint8Array(32), 1), RangeError, 'the v1 call shape (no key) is refused')
  t.throws(() => addon!.opensslIterate(new Uint8Array(31), k, 1), RangeError)
  t.throws(() => addon!.iterate(new Uint8Array(32), k, -1), RangeError)
  t.throws(() => addon!.iterate(new Uint8Array(32), k, 1.5), RangeError)
  t.throws(() => addon!.chain(new Uint8Array(32), k, 100, 3), RangeError)
  t.throws(() => addon!.chain(new Uint8Array(32), k, 2048, 1), RangeError)
  t.throws(() => addon!.chainAsync(new Uint8Array(32), k, 10, 0), RangeError)
  t.throws(() => addon!.opensslLoop(new Uint8Array(3), 10), RangeError)
})

t.test('with the addon disabled the gate still starts on the TypeScript chain', async (t) => {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e',
    "const { selectChain } = await import('./dist/lib/chain/select.js'); console.log((await selectChain()).name)"],
  { env: { ...process.env, AOG_NATIVE: '0' }, encoding: 'utf8' })
  t.equal(r.stdout.trim(), 'typescript', r.stderr)
})
