/**
 * The bench scripts' command lines (bench/args.ts): typed values and defaults in process,
 * and for every script, run as a user runs it: --help exits 0 listing its options, and an unknown
 * option, a stray argument or a bad number exits 2 with one clear line, before any server starts.
 */
import t from 'tap'
import { join } from 'node:path'
import { benchArgs, type BenchOption } from '../../bench/args.js'
import { run } from '../helpers/spawn.js'
import { ROOT } from '../helpers/pki.js'

t.test('numbers come back as numbers, defaults fill the rest, booleans are flags', async (t) => {
  const opts = {
    rounds: { type: 'number', default: 5, help: 'r' },
    rate: { type: 'number', default: 8000, min: 0, help: 'r' },
    path: { type: 'string', default: '/challenge', help: 'p' },
    quick: { type: 'boolean', default: false, help: 'q' },
  } as const
  t.same(benchArgs('bench:x', 's', opts, []), { rounds: 5, rate: 8000, path: '/challenge', quick: false })
  t.same(benchArgs('bench:x', 's', opts, ['--rounds', '9', '--rate', '0', '--path', '/task', '--quick']), { rounds: 9, rate: 0, path: '/task', quick: true })
  t.same(benchArgs('bench:x', 's', opts, ['--rounds=3']), { rounds: 3, rate: 8000, path: '/challenge', quick: false })
})

const SCRIPTS: Array<[string, string, string[]]> = [
  ['chain', 'bench:chain', ['--iterations', '--rounds']],
  ['verify', 'bench:verify', ['--rounds', '--warm', '--workers']],
  ['http', 'bench:http', ['--duration', '--rounds', '--connections', '--passes-concurrency', '--calibrate', '--gate-args']],
  ['handshake', 'bench:handshake', ['--duration', '--rounds', '--concurrency']],
  ['store', 'bench:store', ['--ops', '--concurrency', '--redis', '--no-cluster', '--steady-live']],
  ['instructions', 'bench:instructions', ['--requests', '--warm', '--connections', '--functions']],
  ['steps', 'bench:steps', ['--rate', '--duration', '--rounds', '--connections']],
  ['profile', 'profile', ['--duration', '--path', '--gate-args']],
  ['access', 'bench:auth / bench:proxy', ['--mode', '--duration', '--rounds', '--connections', '--redis']],
  ['signature', 'bench:signature', ['--duration', '--rounds', '--connections']],
  ['assertion', 'bench:assertion', ['--signs', '--rounds']],
  ['compare', 'bench:compare', ['--ref', '--rate', '--rounds', '--duration', '--connections', '--path', '--gate-args']],
  ['idle-start', 'bench:idle-start', ['--idle', '--rounds', '--duration', '--connections']],
]

/** benchArgs in process, with process.exit and stderr caught: what a failing command line prints. */
function failure (options: Parameters<typeof benchArgs>[2], argv: string[]): { code: number | undefined, stdout: string, stderr: string } {
  const exit = process.exit
  const write = process.stderr.write
  const writeOut = process.stdout.write
  let stdout = ''
  let stderr = ''
  let code: number | undefined
  process.exit = ((c?: number) => { code = c; throw new Error('exit') }) as typeof process.exit
  process.stderr.write = ((s: string) => { stderr += s; return true }) as typeof process.stderr.write
  process.stdout.write = ((s: string) => { stdout += s; return true }) as typeof process.stdout.write
  try {
    benchArgs('bench:x', 'What it measures.', options, argv)
  } catch (err) {
    if ((err as Error).message !== 'exit') throw err
  } finally {
    process.exit = exit
    process.stderr.write = write
    process.stdout.write = writeOut
  }
  return { code, stdout, stderr }
}

t.test('--help prints every option with its default, then exits 0', async (t) => {
  const opts = {
    rounds: { type: 'number', default: 5, help: 'rounds to run' },
    'gate-args': { type: 'string', default: '', help: 'gate options' },
    quick: { type: 'boolean', default: false, help: 'be quick' },
  } satisfies Record<string, BenchOption>
  for (const flag of ['--help', '-h']) {
    const h = failure(opts, [flag])
    t.equal(h.code, 0, `${flag} exits 0`)
    t.equal(h.stderr, '')
    t.equal(h.stdout, [
      'Usage: npm run bench:x [-- options]',
      '',
      'What it measures.',
      '',
      'Options:',
      '  --rounds <n>        rounds to run (default: 5)',
      '  --gate-args <text>  gate options',
      '  --quick             be quick',
      '  --help, -h          print this help',
      '',
    ].join('\n'))
  }
})

t.test('a bad command line exits 2 with one clear line, never a stack trace', async (t) => {
  const opts = {
    rounds: { type: 'number', default: 5, help: 'r' },
    rate: { type: 'number', default: 8000, min: 0, help: 'r' },
    share: { type: 'number', default: 0.5, min: 0, integer: false, help: 's' },
    path: { type: 'string', default: '/', help: 'p', check: (v: string) => v.startsWith('/') ? undefined : 'expected a path starting with /' },
  } satisfies Record<string, BenchOption>
  const cases: Array<[string[], RegExp]> = [
    [['--bogus'], /^bench:x: Unknown option '--bogus'\n/],
    [['stray'], /^bench:x: Unexpected argument 'stray'/],
    [['--rounds'], /^bench:x: Option '--rounds <value>' argument missing\n/],
    [['--rounds', 'abc'], /^bench:x: --rounds must be a whole number of at least 1, not "abc"\n/],
    [['--rounds', ''], /--rounds must be a whole number of at least 1, not ""/],
    [['--rounds', '0'], /--rounds must be a whole number of at least 1, not "0"/],
    [['--rounds', '2.5'], /--rounds must be a whole number/],
    [['--rounds', 'Infinity'], /--rounds must be a whole number/],
    [['--rate=-1'], /--rate must be a whole number of at least 0, not "-1"/],
    [['--share', 'x'], /--share must be a number of at least 0, not "x"/],
    [['--path', 'task'], /^bench:x: --path "task": expected a path starting with \/\n/],
  ]
  for (const [argv, message] of cases) {
    const f = failure(opts, argv)
    t.equal(f.code, 2, `${argv.join(' ')} exits 2`)
    t.match(f.stderr, message)
    t.match(f.stderr, /\nRun `npm run bench:x -- --help` for the options\.\n$/)
    t.notMatch(f.stderr, /\n\s+at /, 'no stack trace')
  }
  t.same(benchArgs('bench:x', 's', opts, ['--share', '0.25']).share, 0.25, 'a fractional number where one is allowed')
})

t.test('every bench script: --help lists its options; a bad option exits 2 before anything starts', async (t) => {
  await Promise.all(SCRIPTS.map(async ([file, command, flags]) => {
    const script = join(ROOT, 'dist', 'bench', `${file}.js`)
    const [help, bad] = await Promise.all([run(script, ['--help']), run(script, [flags[0]!, 'not-a-number', '--bogus'])])
    t.equal(help.code, 0, `${command} --help exits 0`)
    t.match(help.stdout, new RegExp(`^Usage: npm run ${command} \\[-- options\\]\n`), `${command} usage line`)
    for (const f of [...flags, '--help']) t.match(help.stdout, new RegExp(`\\n  ${f}[ ,]`), `${command} lists ${f}`)
    t.equal(bad.code, 2, `${command} with a bad option exits 2`)
    t.match(bad.stderr, new RegExp(`^${command}: Unknown option '--bogus'\nRun \`npm run ${command} -- --help\` for the options[.]\n$`), `${command}: one clear line`)
    t.equal(bad.stdout, '', `${command}: no run started`)
  }))
})

t.test('string options are checked', async (t) => {
  const http = await run(join(ROOT, 'dist', 'bench', 'http.js'), ['--calibrate', '5,x'])
  t.equal(http.code, 2)
  t.match(http.stderr, /--calibrate "5,x": expected positive numbers separated by commas/)
  const profile = await run(join(ROOT, 'dist', 'bench', 'profile.js'), ['--path', 'challenge'])
  t.equal(profile.code, 2)
  t.match(profile.stderr, /expected a path starting with \//)
  const store = await run(join(ROOT, 'dist', 'bench', 'store.js'), ['--redis', 'localhost:6379'])
  t.equal(store.code, 2)
  t.match(store.stderr, /expected a redis:\/\/ or rediss:\/\/ URL/)
})
