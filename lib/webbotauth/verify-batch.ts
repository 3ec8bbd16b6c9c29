/**
 * Ed25519 verifications asked within one event-loop turn, run back to back after it (in the check
 * phase), then answered together: under load the verifier's code and tables stay in the CPU's
 * caches across the batch, and the request path's stay warm for the responses that follow, where
 * interleaving one verification with each response evicted both (docs/decisions/signature-cost.md).
 * Under light load a batch is one verification, a setImmediate later.
 */
import type { KeyObject } from 'node:crypto'
import { ed25519Verifier } from './ed25519.js'

interface Job { data: Buffer, key: KeyObject, signature: Buffer, resolve: (ok: boolean) => void }

let jobs: Job[] = []

function run (): void {
  const batch = jobs
  jobs = []
  for (const j of batch) {
    let ok = false
    // A verifier never throws; if one did, its job is refused (fail closed) and the batch goes on.
    try { ok = ed25519Verifier().verify(j.data, j.key, j.signature) } catch {}
    j.resolve(ok)
  }
}

/** True when `signature` is `key`'s Ed25519 signature of `data` (the gate's verifier; never rejects). */
export async function verifyInBatch (data: Buffer, key: KeyObject, signature: Buffer): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    if (jobs.push({ data, key, signature, resolve }) === 1) setImmediate(run)
  })
}
