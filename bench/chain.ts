/**
 * bench:chain — nanoseconds per sha256-chain-v2 link (XOR with the key, one SHA-256 of 32 bytes) for
 * each implementation, next to two baselines of the same keyed link measured in the same run: a
 * `crypto.hash` loop (speed ratio > 1 = faster) and, where the addon is built, a plain C loop of
 * XOR + OpenSSL's SHA256_Init/Update/Final (time ratio: the native chain's cost relative to raw OpenSSL). The native chain is shown with the kernel
 * it chose (sha-ni where the CPU has the SHA extensions) and, for comparison, with its OpenSSL kernel.
 *   npm run bench:chain [-- --iterations N --rounds R]
 */
import { createHash, hash } from 'node:crypto'
import { chainKey, iterateTs } from '../lib/chain/chain.js'
import { loadNative } from '../lib/chain/native.js'
import { benchArgs } from './args.js'
import { machine, median, medianNsPerUnit, table } from './util.js'

const values = benchArgs('bench:chain', 'Nanoseconds per chain link for each implementation, next to a crypto.hash loop and a C loop on OpenSSL measured in the same run.', {
  iterations: { type: 'number', default: 2_000_000, help: 'links per round and implementation' },
  rounds: { type: 'number', default: 7, help: 'rounds per implementation (the median is shown)' },
})
const N = values.iterations
const R = values.rounds

const KEY = chainKey(Buffer.alloc(32))
/** One keyed link in plain JavaScript: the input block is digest XOR key. */
function xorKey (d: Buffer, x: Buffer): Buffer {
  for (let j = 0; j < 32; j++) x[j] = d[j]! ^ KEY[j]!
  return x
}
const impls: Record<string, () => void> = {
  'crypto.hash loop (baseline)': () => {
    let d = Buffer.alloc(32)
    const x = Buffer.alloc(32)
    for (let i = 0; i < N; i++) d = hash('sha256', xorKey(d, x), 'buffer')
  },
  'createHash loop': () => {
    let d = Buffer.alloc(32)
    const x = Buffer.alloc(32)
    for (let i = 0; i < N; i++) d = createHash('sha256').update(xorKey(d, x)).digest()
  },
  'typescript (unrolled)': () => {
    iterateTs(new Uint8Array(32), KEY, N)
  },
}
const { addon, reason } = loadNative()
if (addon !== undefined) {
  impls['C loop on OpenSSL (baseline)'] = () => { addon.opensslLoop(KEY, N) }
  impls[`native (kernel: ${addon.kernel})`] = () => { addon.iterate(new Uint8Array(32), KEY, N) }
  if (addon.kernel !== 'openssl') impls['native (kernel: openssl)'] = () => { addon.opensslIterate(new Uint8Array(32), KEY, N) }
} else {
  console.log(`native chain unavailable (${reason}): run npm run build:native`)
}

// Warm up every implementation (JIT), then measure interleaved rounds so noise hits all alike.
for (const fn of Object.values(impls)) fn()
const ns: Record<string, number[]> = Object.fromEntries(Object.keys(impls).map((k) => [k, []]))
for (let r = 0; r < R; r++) {
  for (const [name, fn] of Object.entries(impls)) ns[name]!.push(medianNsPerUnit(1, N, fn))
}
const base = median(ns['crypto.hash loop (baseline)']!)
console.log(`bench:chain  ${machine()}  N=${N} per round, ${R} rounds, median`)
const c = ns['C loop on OpenSSL (baseline)']
const cBase = c === undefined ? undefined : median(c)
console.log(table(Object.entries(ns).map(([name, xs]) => {
  const m = median(xs)
  return {
    implementation: name,
    'ns/iteration': m.toFixed(1),
    'iterations/s': Math.round(1e9 / m).toLocaleString('en'),
    'speed vs crypto.hash': `${(base / m).toFixed(2)}x`,
    'time vs C/OpenSSL': cBase === undefined ? 'n/a' : `${(m / cBase).toFixed(2)}x`,
  }
})))
