/** The README's examples really pass a running gate. */
import t from 'tap'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startGate } from '../helpers/gate.js'
import { run } from '../helpers/spawn.js'
import { ROOT } from '../helpers/pki.js'
import { spawn } from 'node:child_process'

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')

t.test('the curl + openssl + python3 agent of the README passes the gate', async (t) => {
  const script = readFileSync(join(ROOT, 'docs/examples/curl-agent.sh'), 'utf8')
  t.ok(readme.includes(script.split('\n').slice(1).join('\n').trim()), 'README shows docs/examples/curl-agent.sh verbatim')
  const g = await startGate(t)
  const out = await new Promise<{ code: number | null, stdout: string, stderr: string }>((resolve) => {
    const child = spawn('bash', [join(ROOT, 'docs/examples/curl-agent.sh')], { cwd: ROOT, env: { ...process.env, GATE: g.url } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += String(d) })
    child.stderr.on('data', (d) => { stderr += String(d) })
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
  t.equal(out.code, 0, out.stderr)
  t.match(JSON.parse(out.stdout), { status: 'accepted', verification: 'sampled' })
})

t.test('the TypeScript agent example of the README passes the gate through the package entry', async (t) => {
  const example = readFileSync(join(ROOT, 'docs/examples/agent.ts'), 'utf8')
  t.ok(readme.includes(example.trim()), 'README shows docs/examples/agent.ts verbatim')
  const g = await startGate(t)
  // The example has no type annotations, so it runs as JavaScript; inside the package directory
  // `import … from 'aog'` resolves to the package itself (its `exports`, i.e. the built dist/).
  const file = join(ROOT, 'dist', `example-agent-${process.pid}.mjs`)
  writeFileSync(file, example.replace('https://localhost:8443', g.url))
  t.teardown(() => rmSync(file, { force: true }))
  const out = await run(file, [])
  t.equal(out.code, 0, out.stderr)
  t.match(out.stdout, /status: 'accepted'/)
})
