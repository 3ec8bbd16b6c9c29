/**
 * Live memory for "streams, never holds a whole body" checks: V8's heap and the buffers outside it
 * after a full collection. RSS does not tell: freed buffers stay in it until V8 collects, tens of
 * MiB later, so an RSS bound on a streamed body is either loose or flaky.
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

let gc: (() => void) | undefined

/** Bytes live now, after a full garbage collection (node's gc, exposed for this process only). */
export function liveBytes (): number {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc')
    gc = runInNewContext('gc') as () => void
  }
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

/** Live bytes before `work` and their peak while it runs (sampled every `everyMs`, and at its end). */
export async function liveGrowth (work: () => Promise<void>, everyMs = 25): Promise<{ base: number, peak: number }> {
  const base = liveBytes()
  let peak = base
  const timer = setInterval(() => { peak = Math.max(peak, liveBytes()) }, everyMs)
  try { await work() } finally { clearInterval(timer) }
  return { base, peak: Math.max(peak, liveBytes()) }
}
