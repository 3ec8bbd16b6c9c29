/**
 * Poll files for a change (modification time, inode or size: a file replaced by a rename counts).
 * Each call has its own listener, removed by the function it returns: other gates of the process
 * may watch the same file.
 */
import { unwatchFile, watchFile, type Stats } from 'node:fs'

export function watchFiles (files: readonly string[], intervalMs: number, onChange: () => void): () => void {
  if (intervalMs <= 0 || files.length === 0) return () => {}
  const changed = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino || cur.size !== prev.size) onChange()
  }
  for (const f of files) watchFile(f, { interval: intervalMs, persistent: false }, changed)
  return () => { for (const f of files) unwatchFile(f, changed) }
}
