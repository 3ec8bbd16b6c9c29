/** The keyed link of docs/protocol.md section 3 with node:crypto, one link at a time: the tests' reference. */
import { createHash } from 'node:crypto'

export function reference (start: Uint8Array, key: Uint8Array, n: number): Buffer {
  let ref = Buffer.from(start)
  for (let i = 0; i < n; i++) {
    const x = Buffer.alloc(32)
    for (let j = 0; j < 32; j++) x[j] = ref[j]! ^ key[j]!
    ref = createHash('sha256').update(x).digest()
  }
  return ref
}
