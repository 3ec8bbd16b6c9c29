import t from 'tap'
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fc from 'fast-check'
import { loadNative } from '../../../lib/challenge/native.js'
import { selectChain } from '../../../lib/challenge/select.js'
import { initialDigest, iterateTs, solveChain, typescriptChain } from '../../../lib/challenge/chain.js'
import { solveAsync } from '../../../lib/client/agent.js'

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
  const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/sha256-chain-v1.json', import.meta.url), 'utf8')) as { vectors: Array<{ seed: string, nonce: string, client_fingerprint: string, iterations: number, checkpoint_interval: number, result_hash: string, checkpoints: string[], trace_hash: string }> }
  const native = (await selectChain('native'))
  for (const x of v.vectors) {
    const s = solveChain(x, x.client_fingerprint, native)
    t.equal(s.result_hash, x.result_hash)
    t.equal(s.trace_hash, x.trace_hash)
    const all = addon!.chain(initialDigest(x.seed, x.nonce, x.client_fingerprint), x.iterations, x.checkpoint_interval)
    t.same(Array.from({ length: all.length / 32 }, (_, i) => all.subarray(i * 32, i * 32 + 32).toString('hex')), x.checkpoints)
    const body = await solveAsync({ ...x, algorithm: 'sha256-chain-v1', issued_at: 0, deadline_ts: 0 }, x.client_fingerprint)
    t.match(body, { result_hash: x.result_hash, trace_hash: x.trace_hash, checkpoints: x.checkpoints })
  }
})

t.test('native and TypeScript agree on random inputs (property)', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 0, max: 2000 }), (start, n) => {
    const a = new Uint8Array(start)
    const b = new Uint8Array(start)
    const c = new Uint8Array(start)
    addon!.iterate(a, n)
    iterateTs(b, n)
    addon!.opensslIterate(c, n)
    return Buffer.from(a).equals(Buffer.from(b)) && Buffer.from(c).equals(Buffer.from(b))
  }), { numRuns: 500 })
  let ref = Buffer.alloc(32)
  for (let i = 0; i < 1000; i++) ref = createHash('sha256').update(ref).digest()
  t.same(addon!.opensslLoop(1000), ref, 'the OpenSSL baseline loop computes the same chain')
  t.same(solveChain({ seed: 'ab'.repeat(32), nonce: 'AAAAAAAAAAAAAAAAAAAAAA', iterations: 4096, checkpoint_interval: 64 }, 'cd'.repeat(32), await selectChain('native')),
    solveChain({ seed: 'ab'.repeat(32), nonce: 'AAAAAAAAAAAAAAAAAAAAAA', iterations: 4096, checkpoint_interval: 64 }, 'cd'.repeat(32), typescriptChain))
})

const cpuHasShaNi = process.arch === 'x64' && /^flags\s*:.*\bsha_ni\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'))

t.test('native: the SHA-NI kernel where the CPU has the SHA extensions, OpenSSL otherwise or on request', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  t.equal(addon!.kernel, cpuHasShaNi ? 'sha-ni' : 'openssl', `this CPU ${cpuHasShaNi ? 'has' : 'lacks'} sha_ni`)
  // Long chains too: both kernels from the same start, against node:crypto.
  const start = createHash('sha256').update('aog').digest()
  const a = new Uint8Array(start)
  const b = new Uint8Array(start)
  addon!.iterate(a, 100_000)
  addon!.opensslIterate(b, 100_000)
  let ref = Buffer.from(start)
  for (let i = 0; i < 100_000; i++) ref = createHash('sha256').update(ref).digest()
  t.same(Buffer.from(a), ref, 'iterate: 100000 links equal node:crypto')
  t.same(Buffer.from(b), ref, 'opensslIterate: 100000 links equal node:crypto')
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', [
    "const { loadNative } = await import('./dist/lib/challenge/native.js')",
    "const { solveChain } = await import('./dist/lib/challenge/chain.js')",
    "const { selectChain } = await import('./dist/lib/challenge/select.js')",
    "const x = JSON.parse((await import('node:fs')).readFileSync('test/fixtures/vectors/sha256-chain-v1.json', 'utf8')).vectors[0]",
    "const s = solveChain(x, x.client_fingerprint, await selectChain('native'))",
    "console.log(JSON.stringify({ kernel: loadNative().addon.kernel, ok: s.result_hash === x.result_hash && s.trace_hash === x.trace_hash }))",
  ].join('\n')], { env: { ...process.env, AOG_CHAIN_KERNEL: 'openssl' }, encoding: 'utf8' })
  t.same(JSON.parse(r.stdout.trim() || '{}'), { kernel: 'openssl', ok: true }, `AOG_CHAIN_KERNEL=openssl: the OpenSSL kernel passes the vectors ${r.stderr}`)
})

t.test('native: bad arguments are refused, not a crash', { skip: addon === undefined ? `native chain unavailable: ${reason}` : false }, async (t) => {
  t.throws(() => addon!.iterate(new Uint8Array(31), 1), RangeError)
  t.throws(() => addon!.opensslIterate(new Uint8Array(31), 1), RangeError)
  t.throws(() => addon!.iterate(new Uint8Array(32), -1), RangeError)
  t.throws(() => addon!.iterate(new Uint8Array(32), 1.5), RangeError)
  t.throws(() => addon!.chain(new Uint8Array(32), 100, 3), RangeError)
  t.throws(() => addon!.chain(new Uint8Array(32), 2048, 1), RangeError)
  t.throws(() => addon!.chainAsync(new Uint8Array(32), 10, 0), RangeError)
})

t.test('with the addon disabled the gate still starts on the TypeScript chain', async (t) => {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e',
    "const { selectChain } = await import('./dist/lib/challenge/select.js'); console.log((await selectChain()).name)"],
  { env: { ...process.env, AOG_NATIVE: '0' }, encoding: 'utf8' })
  t.equal(r.stdout.trim(), 'typescript', r.stderr)
})
