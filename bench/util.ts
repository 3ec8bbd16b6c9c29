/** Small helpers shared by the bench scripts: timing, medians, a process's CPU time, machine description, table output. */
import { readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'

/** Run `fn` `rounds` times and return the median of its measured nanoseconds per unit. */
export function medianNsPerUnit (rounds: number, units: number, fn: () => void): number {
  const samples: number[] = []
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint()
    fn()
    samples.push(Number(process.hrtime.bigint() - t0) / units)
  }
  return median(samples)
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

/** CPU milliseconds (user + system, all threads) a process has used so far, or undefined off Linux. */
export function cpuMs (pid: number | undefined): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10 // clock ticks of 10 ms (USER_HZ = 100)
  } catch {
    return undefined
  }
}

/** The median: the middle value, or the mean of the two middle values of an even count. */
export function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/**
 * The middle half of `xs` (first and third quartiles, nearest rank): how far a headline median
 * can be trusted on a noisy machine.
 */
export function middleHalf (xs: number[]): [number, number] {
  const s = [...xs].sort((a, b) => a - b)
  return [s[Math.floor((s.length - 1) / 4)]!, s[Math.ceil((3 * (s.length - 1)) / 4)]!]
}
