/** The bench scripts' command lines: one parser, so that each takes --help and refuses what it cannot use. */
import { parseArgs } from 'node:util'

/** One option of a bench script: its type, default and help line. */
export interface BenchOption {
  type: 'number' | 'string' | 'boolean'
  default: number | string | boolean
  help: string
  /** Numbers: the smallest value allowed (default 1: counts, durations and sizes are positive). */
  min?: number
  /** Numbers: whole numbers only (default true). */
  integer?: boolean
  /** Strings: what is wrong with a value, or undefined when it is fine. */
  check?: (value: string) => string | undefined
}

type OptionValue<O extends BenchOption> = O['type'] extends 'number' ? number : O['type'] extends 'boolean' ? boolean : string

/**
 * A bench script's command line, checked before any server starts: `--help` (or `-h`) prints the
 * usage and exits 0; an unknown option, a stray argument, a missing value or a number that is not
 * one (or is out of range) prints what is wrong on stderr and exits 2, never a stack trace and
 * never a run with NaN rounds. Numbers come back as numbers.
 */
export function benchArgs<T extends Record<string, BenchOption>> (command: string, summary: string, options: T, argv = process.argv.slice(2)): { [K in keyof T]: OptionValue<T[K]> } {
  const usage = (): string => {
    const flag = (name: string, o: BenchOption): string => `--${name}${o.type === 'boolean' ? '' : o.type === 'number' ? ' <n>' : ' <text>'}`
    const width = Math.max(...Object.entries(options).map(([n, o]) => flag(n, o).length), '--help, -h'.length)
    const lines = Object.entries(options).map(([n, o]) => `  ${flag(n, o).padEnd(width)}  ${o.help}${o.type === 'boolean' || o.default === '' ? '' : ` (default: ${String(o.default)})`}`)
    return [`Usage: npm run ${command} [-- options]`, '', summary, '', 'Options:', ...lines, `  ${'--help, -h'.padEnd(width)}  print this help`, ''].join('\n')
  }
  const fail = (message: string): never => {
    process.stderr.write(`${command}: ${message}\nRun \`npm run ${command} -- --help\` for the options.\n`)
    process.exit(2)
  }
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: argv,
      options: { help: { type: 'boolean', short: 'h' }, ...Object.fromEntries(Object.entries(options).map(([n, o]) => [n, { type: o.type === 'boolean' ? 'boolean' as const : 'string' as const }])) },
      strict: true,
      allowPositionals: false,
    }).values
  } catch (err) {
    // parseArgs' own messages name the option; its advice about '--' does not apply here.
    return fail((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''))
  }
  if (values.help === true) {
    process.stdout.write(usage())
    process.exit(0)
  }
  const out: Record<string, number | string | boolean> = {}
  for (const [name, o] of Object.entries(options)) {
    const given = values[name]
    if (o.type === 'boolean') { out[name] = given === true || (given === undefined && o.default === true); continue }
    if (given === undefined) { out[name] = o.default; continue }
    const text = String(given)
    if (o.type === 'string') {
      const wrong = o.check?.(text)
      if (wrong !== undefined) fail(`--${name} ${JSON.stringify(text)}: ${wrong}`)
      out[name] = text
      continue
    }
    const n = text.trim() === '' ? NaN : Number(text)
    const min = o.min ?? 1
    const integer = o.integer ?? true
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min) {
      fail(`--${name} must be ${integer ? 'a whole number' : 'a number'} of at least ${min}, not ${JSON.stringify(text)}`)
    }
    out[name] = n
  }
  return out as { [K in keyof T]: OptionValue<T[K]> }
}
