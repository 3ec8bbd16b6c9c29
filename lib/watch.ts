/**
 * Poll files for a change (modification time, inode or size: a file replaced by a rename counts),
 * and call back once the set has settled (settled below). Each call has its own listener, removed
 * by the function it returns: other gates of the process may watch the same file.
 */
import { unwatchFile, watchFile, type Stats } from 'node:fs'

export function watchFiles (files: readonly string[], intervalMs: number, onChange: () => void): () => void {
  if (intervalMs <= 0 || files.length === 0) return () => {}
  const s = settled(intervalMs, onChange)
  const changed = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino || cur.size !== prev.size) s.changed()
  }
  for (const f of files) watchFile(f, { interval: intervalMs, persistent: false }, changed)
  return () => {
    s.stop()
    for (const f of files) unwatchFile(f, changed)
  }
}

/**
 * Changes seen by a poll of period `intervalMs`, answered by one call once they have settled: no
 * change seen for one and a half periods, at most five periods after the first was seen. A file
 * written in place (truncated, then written) or a pair written one after the other (a key, then its
 * certificate) is read once, whole: not half-written, not twice.
 */
export function settled (intervalMs: number, onChange: () => void): { changed: () => void, stop: () => void } {
  let pending: NodeJS.Timeout | undefined
  let first = 0
  const fire = (): void => {
    pending = undefined
    onChange()
  }
  return {
    changed () {
      const now = performance.now()
      if (pending === undefined) first = now
      clearTimeout(pending)
      // Longer than a period, so the poll after a truncation sees the write before the timer fires;
      // a file that never stops changing is still read, five periods after its first change was seen.
      pending = setTimeout(fire, Math.max(0, Math.min(intervalMs * 1.5, first + 5 * intervalMs - now)))
      pending.unref()
    },
    stop () { clearTimeout(pending) },
  }
}
