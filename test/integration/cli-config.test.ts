/**
 * Issue 21, defects 3 and 4 through the real CLI: configurations that cannot work, bad values and bad
 * files exit 2 naming the field; `aog-server check-config`; a --config file's relative paths.
 * (Defect 6, npm start and --dev: cli-dev.test.ts.)
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AGENT, SERVER, run, startServer, type Run } from '../helpers/spawn.js'
import { DEV } from '../helpers/pki.js'

const dev = (f: string): string => join(DEV, f)
const TLS = ['--tls-cert', dev('server.pem'), '--tls-key', dev('server-key.pem'), '--client-ca', dev('ca.pem')]
const agentArgs = (url: string, dir = DEV): string[] => ['--url', url, '--cert', join(dir, 'agent.pem'), '--key', join(dir, 'agent-key.pem'), '--ca', join(dir, 'ca.pem')]
const tmp = (): string => mkdtempSync(join(tmpdir(), 'aog-cli-'))

/** Run aog-server in a given working directory. */
async function runIn (cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const child = spawn(process.execPath, [SERVER, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => { stdout += String(d) })
  child.stderr.on('data', (d) => { stderr += String(d) })
  return await new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })))
}

/** Exit 2, the field named, and no raw Node or OpenSSL text (no stack, no error codes of OpenSSL). */
function refused (t: Test, r: Run, field: string, message: RegExp): void {
  t.equal(r.code, 2, `exit 2 for ${field}: ${r.stderr}`)
  t.match(r.stderr, new RegExp(`\\n  ${field}: `), `names ${field}`)
  t.match(r.stderr, message)
  t.notMatch(r.stderr, /\n\s+at |error:[0-9A-F]{8}|ERR_OSSL|node:internal/, 'no stack or OpenSSL text')
}

t.test('defect 3: N/k = 1024 checkpoints works through the CLI, or a too-low explicit body limit is refused', async (t) => {
  const shape = ['--iterations', '16777216', '--checkpoint-interval', '16384', '--workers', '1', '--deadline-ms', '60000']
  refused(t, await run(SERVER, [...TLS, ...shape, '--max-body-bytes', '65536']), 'maxBodyBytes', /below the largest honest POST \/task body/)
  const s = await startServer([...TLS, ...shape])
  t.teardown(() => { s.child.kill('SIGKILL') })
  const ok = await run(AGENT, agentArgs(s.url))
  t.equal(ok.code, 0, ok.stdout + ok.stderr)
  t.match(JSON.parse(ok.stdout.split('\n')[0]!), { status: 200 }, 'an honest 1024-checkpoint submission passes at the derived body limit')
})

t.test('defect 4: bad values exit 2 naming the field; a value may start with a dash', async (t) => {
  const cases: Array<[string[], NodeJS.ProcessEnv, string, RegExp]> = [
    [[...TLS, '--listen', '127.0.0.1:70000'], {}, 'listen', /port of 127\.0\.0\.1:70000 is above 65535/],
    [[...TLS, '--ops-listen', '[::1]:65536'], {}, 'opsListen', /above 65535/],
    [[...TLS, '--iterations', '-5'], {}, 'iterations', /must be >= 1/],
    [[...TLS, '--deadline-ms', '-100'], {}, 'deadlineMs', /must be >= 100/],
    [[...TLS, '--headers-timeout-ms', '20000', '--request-timeout-ms', '10000'], {}, 'requestTimeoutMs', /below headersTimeoutMs/],
    [[...TLS, '--min-ns-per-iteration', '10000'], {}, 'deadlineMs', /every honest submission would be either implausibly fast or late/],
    [TLS, { AOG_ITERATIONS: '-5' }, 'iterations', /must be >= 1/],
  ]
  const runs = await Promise.all(cases.map(async ([args, env]) => await run(SERVER, args, env)))
  cases.forEach(([, , field, message], i) => { refused(t, runs[i]!, field, message) })
})

t.test('defect 4: a missing, unreadable or wrong file exits 2 naming the field', async (t) => {
  const dir = tmp()
  const badPem = join(dir, 'bad.pem')
  writeFileSync(badPem, readFileSync(dev('ca.pem'), 'latin1').replace(/(-----BEGIN CERTIFICATE-----\n.{10})/, '$1###'))
  const cases: Array<[string[], string, RegExp]> = [
    [['--tls-cert', join(dir, 'absent.pem'), '--tls-key', dev('server-key.pem'), '--client-ca', dev('ca.pem')], 'tlsCert', /absent\.pem does not exist/],
    [['--tls-cert', dev('server.pem'), '--tls-key', dev('agent-key.pem'), '--client-ca', dev('ca.pem')], 'tlsKey', /is not the private key of the certificate/],
    [['--tls-cert', dev('server.pem'), '--tls-key', dev('server-key.pem'), '--client-ca', dev('forward-secret')], 'clientCa', /holds no PEM certificate/],
    [['--tls-cert', dev('server.pem'), '--tls-key', dev('server-key.pem'), '--client-ca', badPem], 'clientCa', /not a valid PEM certificate/],
    [['--tls-cert', dir, '--tls-key', dev('server-key.pem'), '--client-ca', dev('ca.pem')], 'tlsCert', /is a directory/],
    [[...TLS, '--crl', dev('ca.pem')], 'crl', /ca\.pem/],
    [[...TLS, '--deny-file', join(dir, 'deny')], 'denyFile', /does not exist/],
    [[...TLS, '--upstream', 'https://127.0.0.1:9', '--upstream-ca', dev('server-key.pem'), '--assertion-key', dev('assertion-key.pem')], 'upstreamCa', /holds no PEM certificate/],
    [[...TLS, '--upstream', 'http://127.0.0.1:9', '--assertion-key', dev('server.pem')], 'assertionKey', /server\.pem/],
    [[...TLS, '--attestation-jwks', dev('ca.pem'), '--attestation-issuer', 'x'], 'attestationJwks', /ca\.pem/],
    [[...TLS, '--web-bot-auth', '--signature-agents', join(dir, 'agents')], 'signatureAgents', /does not exist/],
    [['--mode', 'forwarded', '--client-ca', dev('ca.pem'), '--forward-secret-file', join(dir, 'secret')], 'forwardSecretFile', /does not exist/],
    [['--mode', 'forwarded', '--client-ca', dev('ca.pem'), '--forward-secret-file', dev('forward-secret'), '--forward-proxy-ca', join(dir, 'p.pem'), '--tls-cert', dev('server.pem'), '--tls-key', dev('server-key.pem')], 'forwardProxyCa', /does not exist/],
  ]
  // Four at a time: each is a whole process start.
  for (let i = 0; i < cases.length; i += 4) {
    const batch = cases.slice(i, i + 4)
    const runs = await Promise.all(batch.map(async ([args]) => await run(SERVER, args)))
    batch.forEach(([, field, message], j) => { refused(t, runs[j]!, field, message) })
  }
})

t.test('a --config file\'s relative paths resolve against its directory; flags against the working directory', async (t) => {
  const dir = tmp()
  const pki = join(dir, 'etc', 'pki')
  mkdirSync(pki, { recursive: true })
  for (const f of ['server.pem', 'server-key.pem', 'ca.pem']) copyFileSync(dev(f), join(pki, f))
  writeFileSync(join(dir, 'etc', 'aog.json'), JSON.stringify({ tlsCert: 'pki/server.pem', tlsKey: './pki/server-key.pem', clientCa: 'pki/ca.pem', iterations: 4096, checkpointInterval: 256 }))
  const elsewhere = tmp()
  const ok = await runIn(elsewhere, ['check-config', '--config', join(dir, 'etc', 'aog.json')])
  t.equal(ok.code, 0, ok.stderr)
  t.match(JSON.parse(ok.stdout), { tlsCert: join(pki, 'server.pem'), tlsKey: join(pki, 'server-key.pem'), clientCa: join(pki, 'ca.pem') })
  const flags = await runIn(pki, ['check-config', '--tls-cert', 'server.pem', '--tls-key', 'server-key.pem', '--client-ca', 'ca.pem'])
  t.equal(flags.code, 0, flags.stderr)
  const wrongCwd = await runIn(elsewhere, ['check-config', '--tls-cert', 'server.pem', '--tls-key', 'server-key.pem', '--client-ca', 'ca.pem'])
  t.equal(wrongCwd.code, 2)
  t.same([...wrongCwd.stderr.matchAll(/\n {2}(\w+): /g)].map((m) => m[1]), ['tlsCert', 'tlsKey', 'clientCa'], 'each relative flag path is looked up in the working directory')
})

t.test('check-config: the effective configuration with credentials masked, exit 0; every bad field, exit 2', async (t) => {
  const secret = readFileSync(dev('forward-secret'), 'utf8').trim()
  const r = await run(SERVER, ['check-config', ...TLS, '--iterations', '16777216', '--checkpoint-interval', '16384', '--store', 'redis',
    '--redis-url', 'redis://aog:pa55word-xyz@10.1.2.3:6379/1', '--forward-secret-file', dev('forward-secret'), '--assertion-key', dev('assertion-key.pem')])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, /the configuration is valid/)
  const c = JSON.parse(r.stdout) as Record<string, unknown>
  t.match(c, { iterations: 16777216, maxBodyBytes: 69967, keepAliveTimeoutMs: 65000, store: 'redis', redisUrl: 'redis://*****:*****@10.1.2.3:6379/1', tlsKey: dev('server-key.pem') }, 'derived values shown')
  t.notMatch(r.stdout, /pa55word-xyz/, 'no Redis password')
  t.notOk(r.stdout.includes(secret), 'no forward secret')
  t.notMatch(r.stdout, /PRIVATE KEY|BEGIN/, 'no key material')

  const bad = await run(SERVER, ['check-config', '--tls-cert', dev('server.pem'), '--tls-key', dev('agent-key.pem'), '--client-ca', dev('server-key.pem'), '--verify', 'maybe', '--listen', 'localhost:99999', '--crl', '/nonexistent/crl.pem'])
  t.equal(bad.code, 2)
  t.equal(bad.stdout, '', 'nothing printed as a configuration')
  t.same([...bad.stderr.matchAll(/\n {2}(\w+): /g)].map((m) => m[1]).sort(), ['clientCa', 'crl', 'listen', 'tlsKey', 'verify'], 'schema, cross-field and file problems together')
  const usage = await run(SERVER, ['check-config', '--frobnicate'])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /frobnicate/)
})

t.test('an address already in use exits 2 naming listen or opsListen', async (t) => {
  const { createServer } = await import('node:net')
  const held = createServer()
  await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { held.close() })
  const port = (held.address() as { port: number }).port
  refused(t, await run(SERVER, [...TLS, '--workers', '1', '--listen', `127.0.0.1:${port}`, '--ops-listen', '127.0.0.1:0']), 'listen', /already in use \(EADDRINUSE\)/)
  refused(t, await run(SERVER, [...TLS, '--workers', '1', '--listen', '127.0.0.1:0', '--ops-listen', `127.0.0.1:${port}`]), 'opsListen', /already in use/)
})
