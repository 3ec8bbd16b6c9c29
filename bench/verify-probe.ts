/**
 * bench:signature's probe: a process the bench pins to the gate's CPU, which verifies on request
 * while the load runs, so that "one verification" is measured on the same core at the same moments
 * as the gate's own work (the VM's speed changes by half again between moments:
 * docs/decisions/signature-cost.md). Each line `probe` on stdin is answered by one JSON line: the
 * CPU nanoseconds per verification (this process's CPU time, so time the gate takes from it is not
 * counted) of the same signature verified over and over (`same`, what the target is defined by) and
 * of distinct signatures, each verified once (`fresh`, as the gate sees them).
 */
import { createPublicKey, sign } from 'node:crypto'
import { createInterface } from 'node:readline'
import { ed25519Verifier } from '../lib/webbotauth/ed25519.js'
import { challengeBase, SIGNING_KEY } from './signed.js'

const COUNT = 100
const verifier = ed25519Verifier()
const pub = createPublicKey(SIGNING_KEY)
const base = challengeBase()
const sig = sign(null, base, SIGNING_KEY)
const fresh = Array.from({ length: 15_000 }, (_, i) => {
  const b = Buffer.from(base)
  b.write(String(i).padStart(8, '0'), b.length - 8, 'latin1')
  return { base: b, sig: sign(null, b, SIGNING_KEY) }
})
let next = 0

function cpuNs (): number {
  const u = process.cpuUsage()
  return (u.user + u.system) * 1000
}

function block (one: boolean): number {
  const t0 = cpuNs()
  for (let i = 0; i < COUNT; i++) {
    const s = one ? { base, sig } : fresh[next++ % fresh.length]!
    if (!verifier.verify(s.base, pub, s.sig)) throw new Error('the probe\'s signature did not verify')
  }
  return (cpuNs() - t0) / COUNT
}

block(true)
process.stdout.write(`${JSON.stringify({ ready: verifier.name })}\n`)
for await (const line of createInterface({ input: process.stdin })) {
  if (line !== 'probe') continue
  process.stdout.write(`${JSON.stringify({ same: block(true), fresh: block(false) })}\n`)
}
