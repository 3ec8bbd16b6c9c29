/** The README's examples really pass a running gate. */
import t from 'tap'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startGate } from '../helpers/gate.js'
import { run } from '../helpers/spawn.js'
import { ROOT } from '../helpers/pki.js'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { once } from 'node:events'
import { request } from 'undici'
import { DEV, agentFiles } from '../helpers/pki.js'
import { certificateFingerprint } from '../../lib/client/agent.js'

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

t.test('the echo upstream example answers as documented, behind the gate; the protected-request example reaches it', async (t) => {
  const echo = spawn(process.execPath, [join(ROOT, 'docs/examples/echo-upstream.mjs')], { env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = once(echo, 'exit')
  t.teardown(() => { if (echo.exitCode === null) echo.kill('SIGKILL') })
  const [line] = await once(createInterface({ input: echo.stdout }), 'line') as [string]
  const url = /^echo upstream listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line)?.[1]
  t.ok(url, line)

  const direct = await request(url + '/plain?q=1', { method: 'PUT', body: 'abc' })
  t.same(await direct.body.json(), { method: 'PUT', path: '/plain?q=1', body_bytes: 3, agent: null }, 'not through the gate: no agent')

  const g = await startGate(t, { upstream: url!, assertionKey: join(DEV, 'assertion-key.pem') })
  const agent = g.agent()
  const r = await agent.fetch('/through?x=2', { method: 'POST', body: 'hello' })
  const e = await r.body.json() as { method: string, path: string, body_bytes: number, agent: { verified: boolean, header: Record<string, unknown>, claims: Record<string, unknown> } }
  t.match(e, { method: 'POST', path: '/through?x=2', body_bytes: 5 })
  t.equal(e.agent.verified, false, 'decoded, not verified, and it says so')
  t.match(e.agent.header, { kid: String, alg: /^(EdDSA|ES256)$/ })
  t.match(e.agent.claims, { iss: 'aog', sub: agent.fingerprint, htm: 'POST', htu: '/through?x=2', jti: String, grant_exp: Number })

  const example = readFileSync(join(ROOT, 'docs/examples/protected.ts'), 'utf8')
  t.ok(readFileSync(join(ROOT, 'README.md'), 'utf8').includes(example.trim()), 'README shows docs/examples/protected.ts verbatim')
  const file = join(ROOT, 'dist', `example-protected-${process.pid}.mjs`)
  writeFileSync(file, example.replace('https://localhost:8443', g.url))
  t.teardown(() => rmSync(file, { force: true }))
  const out = await run(file, [])
  t.equal(out.code, 0, out.stderr)
  t.match(out.stdout, /^200 \{/m)
  t.match(out.stdout, /path: '\/hello\?name=agent'/)
  t.match(out.stdout, /path: '\/notes'/)
  t.match(out.stdout, /body_bytes: 16/, 'the POST body')
  t.ok(out.stdout.includes(`sub: '${certificateFingerprint(agentFiles('agent').cert)}'`), 'the decoded claims name the agent')

  echo.kill('SIGTERM')
  t.same(await exited, [0, null], 'SIGTERM: a clean exit')
})
