/**
 * The optional native chain (lib/native/aog_chain.c, built by node-gyp at install). Loaded once,
 * self-tested against a known digest, and never required: every caller falls back to the
 * TypeScript chain when it is missing. AOG_NATIVE=0 disables it (to test the fallback).
 */
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { packageRoot } from '../paths.js'
import type { ChainImpl } from './chain.js'

export interface NativeAddon {
  /** The kernel the addon chose at load: SHA-NI intrinsics, or OpenSSL's SHA-256. */
  readonly kernel: 'sha-ni' | 'openssl'
  iterate (digest: Uint8Array, key: Uint8Array, n: number): void
  /** iterate, always on OpenSSL (tests compare the kernels). */
  opensslIterate (digest: Uint8Array, key: Uint8Array, n: number): void
  chain (start: Uint8Array, key: Uint8Array, n: number, k: number): Buffer
  chainAsync (start: Uint8Array, key: Uint8Array, n: number, k: number): Promise<Buffer>
  /** The bench baseline: n keyed links from a zero digest, a plain C loop on OpenSSL. */
  opensslLoop (key: Uint8Array, n: number): Buffer
}

let cached: { addon: NativeAddon | undefined, reason: string } | undefined

/** The addon, or undefined with the reason it is unavailable. */
export function loadNative (): { addon: NativeAddon | undefined, reason: string } {
  if (cached !== undefined) return cached
  if (process.env.AOG_NATIVE === '0') return (cached = { addon: undefined, reason: 'disabled by AOG_NATIVE=0' })
  try {
    const require = createRequire(import.meta.url)
    const addon = require(join(packageRoot(), 'lib', 'native', 'build', 'Release', 'aog_chain.node')) as NativeAddon
    // Self-test: three keyed links from zero against node:crypto.
    const d = new Uint8Array(32)
    const key = createHash('sha256').update('aog self-test').digest()
    addon.iterate(d, key, 3)
    let ref = Buffer.alloc(32)
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 32; j++) ref[j] = ref[j]! ^ key[j]!
      ref = createHash('sha256').update(ref).digest()
    }
    if (!ref.equals(d)) return (cached = { addon: undefined, reason: 'self-test failed' })
    return (cached = { addon, reason: 'loaded' })
  } catch (err) {
    return (cached = { addon: undefined, reason: `not built (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` })
  }
}

/** The native ChainImpl, when available. */
export function nativeChain (): ChainImpl | undefined {
  const { addon } = loadNative()
  if (addon === undefined) return undefined
  return { name: 'native', iterate: (digest, key, n) => { addon.iterate(digest, key, n) } }
}

/** The kernel behind an implementation name, for the start-up line and the metric label. */
export function chainKernel (implementation: string): string {
  if (implementation !== 'native') return implementation
  return loadNative().addon?.kernel ?? 'unknown'
}
