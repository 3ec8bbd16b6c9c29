/** The two CLIs as an operator and an agent run them: real processes, real TLS. */
import t from 'tap'
import { selectChain } from '../../lib/chain/select.js'
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AGENT, SERVER, run, startServer } from '../helpers/spawn.js'
import { DEV, ROOT, agentFiles } from '../helpers/pki.js'
import { createAgent, getChallenge, solve, submitTask } from '../../lib/client/agent.js'
import { describeOptions } from '../../lib/config.js'
import { createHash, randomBytes } from 'node:crypto'
import { startGate } from '../helpers/gate.js'
import { startEchoUpstream, type Echoed } from '../helpers/upstream.js'

const TLS = ['--tls-cert', join(DEV, 'server.pem'), '--tls-key', join(DEV, 'server-key.pem'), '--client-ca', join(DEV, 'ca.pem')]
const SMALL = ['--iterations', '8192', '--checkpoint-interval', '512', '--min-ns-per-iteration', '0', '--workers', '1']
const agentArgs = (url: string, name = 'agent'): string[] => ['--url', url, '--cert', join(DEV, `${name}.pem`), '--key', join(DEV, `${name}-key.pem`), '--ca', join(DEV, 'ca.pem')]

t.test('--help lists every option with its environment variable; --version prints the version', async (t) => {
  const h = await run(SERVER, ['--help'])
  t.equal(h.code, 0)
  for (const o of describeOptions()) {
    t.ok(h.stdout.includes(o.flag), o.flag)
    t.ok(h.stdout.includes(o.env), o.env)
  }
  const v = await run(SERVER, ['--version'])
  t.equal(v.stdout.trim(), JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version)
  const a = await run(AGENT, ['--help'])
  t.equal(a.code, 0)
  t.match(a.stdout, /--concurrency/)
})

t.test('a bad value exits non-zero naming the field, from flags, environment or file', async (t) => {
  const flag = await run(SERVER, [...TLS, '--iterations', 'lots'])
  t.equal(flag.code, 2)
  t.match(flag.stderr, /iterations: must be integer/)
  const env = await run(SERVER, TLS, { AOG_VERIFY: 'maybe' })
  t.equal(env.code, 2)
  t.match(env.stderr, /verify: must be one of: full, sampled/)
  const dir = mkdtempSync(join(tmpdir(), 'aog-'))
  writeFileSync(join(dir, 'c.json'), JSON.stringify({ samples: 0, colour: 'blue' }))
  const file = await run(SERVER, [...TLS, '--config', join(dir, 'c.json')])
  t.equal(file.code, 2)
  t.match(file.stderr, /samples: must be >= 1/)
  t.match(file.stderr, /colour: is not a known option/)
  const unknown = await run(SERVER, ['--frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /frobnicate/)
  const noTls = await run(SERVER, [])
  t.equal(noTls.code, 2)
  t.match(noTls.stderr, /tlsCert: is required \(or use --dev\)/)
})

t.test('the server logs its start-up line, the agent CLI passes it, and a rogue agent fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-'))
  writeFileSync(join(dir, 'c.json'), JSON.stringify({ checkpointInterval: 1024 }))
  const s = await startServer([...TLS, '--workers', '1', '--config', join(dir, 'c.json'), '--checkpoint-interval', '256'], { AOG_ITERATIONS: '4096', AOG_MIN_NS_PER_ITERATION: '0' })
  t.teardown(() => { s.child.kill('SIGKILL') })
  t.match(s.lines[0], { msg: 'aog gate listening', mode: 'direct', store: 'memory', chain: (await selectChain()).name, workers: 1, iterations: 4096 })
  const ok = await run(AGENT, [...agentArgs(s.url), '--count', '3', '--concurrency', '2'])
  t.equal(ok.code, 0, ok.stderr)
  const lines = ok.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  t.equal(lines.length, 4)
  for (const l of lines.slice(0, 3)) t.match(l, { status: 200, nonce: /^[A-Za-z0-9_-]{22}$/, runtime_ms: Number, verification: 'sampled' })
  t.match(lines[3], { summary: true, attempts: 3, passed: 3, failed: 0 })

  // Precedence: the flag (256) beat the file (1024); the environment set the iterations.
  const agent = createAgent({ url: s.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  const c = await getChallenge(agent)
  t.equal(c.checkpoint_interval, 256)
  t.equal(c.iterations, 4096)

  const rogue = await run(AGENT, agentArgs(s.url, 'rogue'))
  t.equal(rogue.code, 1)
  t.match(JSON.parse(rogue.stdout.split('\n')[0]!), { attempt: 1, status: 0 })
  const usage = await run(AGENT, ['--url', s.url])
  t.equal(usage.code, 2)
})

t.test('--web-bot-auth: the start-up line names the Ed25519 verifier (libsodium; node:crypto under AOG_NATIVE=0), and a signing agent passes either', async (t) => {
  const native = process.env.AOG_NATIVE !== '0'
  for (const [env, verifier] of [[{}, native ? 'libsodium' : 'node:crypto'], [{ AOG_NATIVE: '0' }, 'node:crypto']] as const) {
    const s = await startServer(['--dev', '--web-bot-auth', ...SMALL], env)
    t.teardown(() => { s.child.kill('SIGKILL') })
    t.match(s.lines.find((l) => l.msg === 'aog gate listening'), { signatureVerifier: verifier }, `${JSON.stringify(env)}: ${verifier}`)
    const signed = await run(AGENT, ['--url', s.url, '--ca', join(DEV, 'ca.pem'), '--sign-key', join(DEV, 'signing-key.pem'), '--signature-agent', 'https://agent.aog.dev', '--count', '2'])
    t.equal(signed.code, 0, signed.stderr)
    t.match(signed.stdout, /"passed":2/)
    s.child.kill('SIGKILL')
  }
  const plain = await startServer([...TLS, ...SMALL])
  t.teardown(() => { plain.child.kill('SIGKILL') })
  const line = plain.lines.find((l) => l.msg === 'aog gate listening')
  t.ok(line !== undefined && !('signatureVerifier' in line), 'without --web-bot-auth: not named')
})

t.test('--web-bot-auth without sodium-native: node:crypto verifies, and the start-up warns with the reason (not under AOG_NATIVE=0)', async (t) => {
  const noSodium = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${join(ROOT, 'test/fixtures/no-sodium.cjs')}` }
  // AOG_NATIVE set either way: CI's second pass runs the suite (and so these servers) under AOG_NATIVE=0.
  for (const env of [{ ...noSodium, AOG_NATIVE: '1' }, { ...noSodium, AOG_NATIVE: '0' }]) {
    const s = await startServer(['--dev', '--web-bot-auth', ...SMALL], env)
    t.teardown(() => { s.child.kill('SIGKILL') })
    t.match(s.lines.find((l) => l.msg === 'aog gate listening'), { signatureVerifier: 'node:crypto' })
    const signed = await run(AGENT, ['--url', s.url, '--ca', join(DEV, 'ca.pem'), '--sign-key', join(DEV, 'signing-key.pem'), '--signature-agent', 'https://agent.aog.dev', '--count', '1'])
    t.equal(signed.code, 0, signed.stderr)
    const warning = s.lines.find((l) => String(l.msg).startsWith('libsodium unavailable'))
    if (env.AOG_NATIVE === '0') t.equal(warning, undefined, 'AOG_NATIVE=0: chosen, not warned about')
    else t.match(warning, { level: 40, reason: 'sodium-native not installed (MODULE_NOT_FOUND)' }, 'missing: warned, with the reason')
    s.child.kill('SIGKILL')
  }
})

t.test('SIGTERM finishes an in-flight verification, then exits 0', async (t) => {
  const s = await startServer([...TLS, '--iterations', String(1 << 20), '--checkpoint-interval', '1024', '--workers', '1', '--min-ns-per-iteration', '0', '--no-require-checkpoints'])
  t.teardown(() => { s.child.kill('SIGKILL') })
  const agent = createAgent({ url: s.url, ...agentFiles('agent') })
  t.teardown(() => agent.close())
  const c = await getChallenge(agent)
  const { checkpoints: _c, trace_hash: _t, ...bare } = solve(c, agent.fingerprint) // whole-chain recomputation: slow
  const inflight = submitTask(agent, bare)
  await new Promise((resolve) => setTimeout(resolve, 60))
  s.child.kill('SIGTERM')
  t.equal((await inflight).status, 'accepted', 'the in-flight request completed')
  t.equal(await s.exited, 0, 'clean exit')
  t.ok(s.lines.some((l) => l.msg === 'shutting down: finishing in-flight requests'))
})

t.test('--dev uses the dev PKI, whose CRL refuses the revoked agent', async (t) => {
  const s = await startServer(['--dev', ...SMALL])
  t.teardown(() => { s.child.kill('SIGKILL') })
  const ok = await run(AGENT, agentArgs(s.url))
  t.equal(ok.code, 0)
  const revoked = await run(AGENT, agentArgs(s.url, 'revoked'))
  t.equal(revoked.code, 1)
  const expired = await run(AGENT, agentArgs(s.url, 'expired'))
  t.equal(expired.code, 1)
})

t.test('aog-server nginx-config prints the reference configuration for the given paths', async (t) => {
  const { renderNginxConfig, EXAMPLE } = await import('../../lib/nginx-config.js')
  const r = await run(SERVER, ['nginx-config', '--upstream', '10.0.0.2:8081', '--client-ca', '/srv/ca.pem', '--server-name', 'gate.test'])
  t.equal(r.code, 0)
  t.equal(r.stdout, renderNginxConfig({ ...EXAMPLE, upstream: '10.0.0.2:8081', clientCa: '/srv/ca.pem', serverName: 'gate.test', protect: undefined }))
  t.match(r.stdout, /ssl_verify_client on;/)
  const bad = await run(SERVER, ['nginx-config', '--client-ca', '/srv/ca.pem"; evil'])
  t.equal(bad.code, 2, 'a value that would break out of the quoted string is refused')
})

t.test('forwarded mode over plain HTTP on every interface: the start-up warns; with --forward-proxy-ca it does not', async (t) => {
  const forwarded = ['--mode', 'forwarded', '--client-ca', join(DEV, 'ca.pem'), '--forward-secret-file', join(DEV, 'forward-secret'), ...SMALL]
  const open = await startServer([...forwarded, '--listen', '0.0.0.0:0'])
  t.teardown(() => { open.child.kill('SIGKILL') })
  t.match(open.lines.find((l) => String(l.msg).startsWith('forwarded mode over plain HTTP')), { level: 40, listen: '0.0.0.0:0' })
  open.child.kill('SIGKILL')
  const tls = await startServer([...forwarded, '--listen', '0.0.0.0:0', '--forward-proxy-ca', join(DEV, 'ca.pem'), '--tls-cert', join(DEV, 'server.pem'), '--tls-key', join(DEV, 'server-key.pem')])
  t.teardown(() => { tls.child.kill('SIGKILL') })
  t.match(tls.lines[0], { gate: /^https:\/\// })
  t.notOk(tls.lines.some((l) => String(l.msg).startsWith('forwarded mode over plain HTTP')), 'HTTPS requiring the proxy\'s certificate: no warning')
})

t.test('forwarded mode: the start-up line says so, and SIGHUP reloads the deny list', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-'))
  writeFileSync(join(dir, 'deny'), '')
  const s = await startServer(['--mode', 'forwarded', '--client-ca', join(DEV, 'ca.pem'), '--forward-secret-file', join(DEV, 'forward-secret'), '--deny-file', join(dir, 'deny'), ...SMALL])
  t.teardown(() => { s.child.kill('SIGKILL') })
  t.match(s.lines[0], { mode: 'forwarded', gate: /^http:\/\// })
  t.notOk(s.lines.some((l) => String(l.msg).startsWith('forwarded mode over plain HTTP')), 'on loopback: no warning')
  s.child.kill('SIGHUP')
  const end = Date.now() + 5000
  while (!s.lines.some((l) => l.msg === 'deny list reloaded') && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(s.lines.some((l) => l.msg === 'deny list reloaded'), 'reloaded on SIGHUP')
  const missingSecret = await run(SERVER, ['--mode', 'forwarded', '--client-ca', join(DEV, 'ca.pem')])
  t.equal(missingSecret.code, 2)
  t.match(missingSecret.stderr, /forwardSecretFile: is required in forwarded mode/)
})

t.test('aog-agent request: a protected request from a shell, curl-like; the grant outlives the process', async (t) => {
  const up = await startEchoUpstream(t)
  const g = await startGate(t, { upstream: up.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const args = ['request', ...agentArgs(g.url)]
  const got = await run(AGENT, [...args, '-i', '/hello?x=1'])
  t.equal(got.code, 0, got.stderr)
  const cut = got.stdout.indexOf('\r\n\r\n')
  const head = got.stdout.slice(0, cut)
  t.match(head, /^HTTP\/1\.1 200 OK\r\n/, 'the status line first')
  t.match(head, /\r\nx-upstream: echo(\r\n|$)/, 'then the headers')
  t.match(JSON.parse(got.stdout.slice(cut + 4)), { method: 'GET', url: '/hello?x=1' }, 'then the body')

  const dir = mkdtempSync(join(tmpdir(), 'aog-'))
  const file = join(dir, 'payload.bin')
  const payload = Buffer.concat([Buffer.from('line 1\nline 2\n'), randomBytes(1000)])
  writeFileSync(file, payload)
  const post = await run(AGENT, [...args, '--method', 'POST', '--data', '@' + file, '-H', 'Content-Type: application/octet-stream', '-H', 'X-Test: one', '/upload'])
  t.equal(post.code, 0, post.stderr)
  const e = JSON.parse(post.stdout) as Echoed
  t.equal(e.method, 'POST')
  t.equal(e.url, '/upload')
  t.equal(e.sha256, createHash('sha256').update(payload).digest('hex'), 'the file, sent as is')
  t.equal(e.headers['x-test'], 'one')
  t.equal(e.headers['content-type'], 'application/octet-stream')
  const data = await run(AGENT, [...args, '-d', 'hello', '/s'])
  t.match(JSON.parse(data.stdout), { method: 'POST', bytes: 5 }, '--data STRING: POST by default')
  t.equal((await g.metrics.grantsIssued.get()).values[0]?.value, 1, 'three processes, one pass: the grant is the identity\'s')

  up.handler = (_req, res) => { res.writeHead(404, { 'content-type': 'text/plain' }).end('no such thing') }
  const missing = await run(AGENT, [...args, '/missing'])
  t.equal(missing.code, 1, 'not a 2xx: exit 1')
  t.equal(missing.stdout, 'no such thing', 'the body is still printed')

  const refused = await run(AGENT, [...args, '/.well-known/aog/x'])
  t.equal(refused.code, 1)
  t.equal(refused.stdout, '')
  t.match(JSON.parse(refused.stderr), { status: 404, code: 'AOG_NOT_FOUND', type: /^urn:aog:problem:/ }, 'a refusal of the gate: its problem JSON on stderr')
  const rogue = await run(AGENT, ['request', ...agentArgs(g.url, 'rogue'), '/x'])
  t.equal(rogue.code, 1, 'a transport failure')
  t.match(rogue.stderr, /^aog-agent request: /)

  for (const bad of [[...args], [...args, 'relative'], [...args, '/a', '/b'], [...args, '-H', 'no colon', '/x'], [...args, '-X', 'GE T', '/x'],
    [...args, '--data', '@' + join(dir, 'absent'), '/x'], ['request', '--url', g.url, '/x'], [...args, '--frobnicate', '/x']]) {
    const r = await run(AGENT, bad)
    t.equal(r.code, 2, `bad usage: ${bad.slice(9).join(' ')}`)
  }
  const help = await run(AGENT, ['request', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /--include/)
})
