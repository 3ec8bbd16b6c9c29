/** Small helpers shared by the bench scripts: timing, medians, machine description, table output. */
import { cpus, totalmem } from 'node:os'

/** Run `fn` `rounds` times and return the median of its measured nanoseconds per unit. */
export function medianNsPerUnit (rounds: number, units: number, fn: () => void): number {
  const samples: number[] = []
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint()
    fn()
    samples.push(Number(process.hrtime.bigint() - t0) / units)
  }
  samples.sort((a, b) => a - b)
  return samples[Math.floor(samples.length / 2)]!
}

export function machine (): string {
  const c = cpus()
  return `${c[0]?.model ?? 'unknown CPU'} x${c.length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`
}

export function table (rows: Array<Record<string, string | number>>): string {
  const keys = Object.keys(rows[0] ?? {})
  const width = keys.map((k) => Math.max(k.length, ...rows.map((r) => String(r[k]).length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(width[i]!)).join('  ')
  return [line(keys), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(keys.map((k) => String(r[k]))))].join('\n')
}
