/**
 * Every way the project starts a gate runs node with --no-memory-reducer (docs/decisions/next-tick-shape.md):
 * `aog-server` itself (its first line: the npm bin, the image's entrypoint, the systemd unit), the
 * npm start scripts, and the benches, which measure the gate as deployed.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from '../helpers/pki.js'

const SHEBANG = '#!/usr/bin/env -S node --no-memory-reducer'

t.test('aog-server runs node with --no-memory-reducer, in the source and in the build', async (t) => {
  t.equal(readFileSync(join(ROOT, 'bin', 'aog-server.ts'), 'utf8').split('\n')[0], SHEBANG)
  t.equal(readFileSync(join(ROOT, 'dist', 'bin', 'aog-server.js'), 'utf8').split('\n')[0], SHEBANG)
  // The build's module (dist/bench is outside coverage: the benches are tools, see .taprc).
  const { GATE_NODE_ARGS } = await import(join(ROOT, 'dist', 'bench', 'servers.js')) as { GATE_NODE_ARGS: readonly string[] }
  t.same(GATE_NODE_ARGS, SHEBANG.split(' ').slice(3), 'the benches start gates with the same flags')
})

t.test('the first line runs: env -S splits it and node takes the flag', async (t) => {
  // As the kernel runs it: the interpreter, the rest of the line as one argument, the script, its arguments.
  const line = readFileSync(join(ROOT, 'dist', 'bin', 'aog-server.js'), 'utf8').split('\n')[0]!
  const [interpreter, rest] = [line.slice(2, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)]
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
  t.equal(execFileSync(interpreter, [rest, join(ROOT, 'dist', 'bin', 'aog-server.js'), '--version'], { encoding: 'utf8' }).trim(), version)
  // A flag node does not know would fail the same way: the check above can fail.
  t.throws(() => execFileSync(interpreter, ['-S node --no-such-v8-flag-aog', join(ROOT, 'dist', 'bin', 'aog-server.js'), '--version'], { stdio: 'ignore' }))
})

t.test('npm start and the other start scripts run node with --no-memory-reducer', async (t) => {
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts
  const starts = Object.entries(scripts).filter(([, cmd]) => cmd.includes('dist/bin/aog-server.js'))
  t.ok(starts.length >= 3, `start scripts found: ${starts.map(([k]) => k).join(', ')}`)
  for (const [name, cmd] of starts) t.match(cmd, /exec node --no-memory-reducer dist\/bin\/aog-server\.js/, name)
})
