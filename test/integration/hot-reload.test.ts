/**
 * Hot reload without a restart (SIGHUP, or the files changed): the server certificate and key, the
 * client CA bundle, the log level. New handshakes see the new material, open connections keep
 * theirs; a broken file keeps the old material, says why at error, and aog_reloads_total says failed.
 */
import t, { type Test } from 'tap'
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes, X509Certificate } from 'node:crypto'
import { connect as tlsConnect } from 'node:tls'
import { request } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles, mintCa, mintCert, pem, type Minted } from '../helpers/pki.js'
import { signatureHeader, HEADERS } from '../../lib/identity/forwarded.js'
import { createAgent, getChallenge } from '../../lib/client/agent.js'
import { outcome, sleep } from '../helpers/outcome.js'
import { startServer } from '../helpers/spawn.js'

/** The fingerprint of the certificate the gate presents to a new connection. */
async function served (g: { url: string }): Promise<string> {
  const socket = tlsConnect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ...agentFiles('agent') })
  try {
    return await new Promise((resolve, reject) => {
      socket.once('secureConnect', () => resolve(socket.getPeerX509Certificate()!.fingerprint256))
      socket.once('error', reject)
    })
  } finally {
    socket.destroy()
  }
}

async function waitLog (g: TestGate, re: RegExp, count = 1): Promise<void> {
  const end = Date.now() + 8000
  while ((g.logs.join('').match(new RegExp(re, 'g')) ?? []).length < count && Date.now() < end) await sleep(20)
  if ((g.logs.join('').match(new RegExp(re, 'g')) ?? []).length < count) throw new Error(`no log line ${String(re)}`)
}

async function reloads (g: { opsUrl: string }, what: string, result: string): Promise<number> {
  const text = await (await request(g.opsUrl + '/metrics')).body.text()
  const m = new RegExp(`^aog_reloads_total\\{what="${what}",result="${result}"\\} (\\d+)$`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

const fp = (cert: Buffer): string => new X509Certificate(cert).fingerprint256
const serverCert = (): Minted => mintCert({ name: 'localhost', profile: 'server', san: 'DNS:localhost,IP:127.0.0.1' })

/** The dev server certificate and key, copied where the test may replace them. */
function tlsFiles (): { tlsCert: string, tlsKey: string } {
  const dir = mkdtempSync(join(tmpdir(), 'aog-reload-'))
  copyFileSync(join(DEV, 'server.pem'), join(dir, 'server.pem'))
  copyFileSync(join(DEV, 'server-key.pem'), join(dir, 'server-key.pem'))
  return { tlsCert: join(dir, 'server.pem'), tlsKey: join(dir, 'server-key.pem') }
}

t.test('the server certificate rotates: new connections get the new one, a kept-alive one keeps working', async (t) => {
  const files = tlsFiles()
  const g = await startGate(t, files, { watchMs: 50 })
  const agent = createAgent({ url: g.url, ...agentFiles('agent'), connections: 1 })
  t.teardown(() => agent.close())
  t.equal(await outcome(getChallenge(agent)), 'accepted', 'a kept-alive connection before the rotation')
  t.equal(await served(g), fp(pem('server.pem')), 'the dev certificate is served')

  const next = serverCert()
  writeFileSync(files.tlsKey, next.key)
  writeFileSync(files.tlsCert, next.cert)
  await waitLog(g, /server certificate and key reloaded/)
  t.equal(await served(g), fp(next.cert), 'a new connection gets the new certificate')
  t.equal(await outcome(getChallenge(agent)), 'accepted', 'the kept-alive connection still works')
  t.equal(await outcome(getChallenge(g.agent())), 'accepted', 'an agent on a new connection passes')
  t.equal(await reloads(g, 'tls', 'ok'), 1)
  t.equal(await reloads(g, 'tls', 'failed'), 0, 'the key written before the certificate was not read half-way')
})

t.test('a broken certificate reload keeps the old material, logs why and counts failed', async (t) => {
  const files = tlsFiles()
  const g = await startGate(t, files, { watchMs: 0 })
  const other = serverCert()
  const cases: Array<[string, () => void, RegExp]> = [
    ['a key that does not match', () => { writeFileSync(files.tlsKey, other.key) }, /does not match the certificate/],
    ['no certificate in the file', () => { copyFileSync(join(DEV, 'server-key.pem'), files.tlsKey); writeFileSync(files.tlsCert, 'not a certificate\n') }, /no certificate in/],
    ['an unreadable key file', () => { copyFileSync(join(DEV, 'server.pem'), files.tlsCert); writeFileSync(files.tlsKey, '') }, /no private key in/],
  ]
  for (const [i, [name, breakIt, why]] of cases.entries()) {
    breakIt()
    g.gate.reload()
    await waitLog(g, /"level":50[^\n]*server certificate reload failed; keeping the previous certificate and key/, i + 1)
    t.match(g.logs.join('').split('\n').filter((l) => l.includes('server certificate reload failed')).at(-1), why, `${name}: says why`)
    t.equal(await served(g), fp(pem('server.pem')), `${name}: the old certificate is still served`)
    t.equal(await outcome(getChallenge(g.agent())), 'accepted', `${name}: agents still pass`)
  }
  t.equal(await reloads(g, 'tls', 'failed'), 3)
  t.notMatch(g.logs.join(''), /BEGIN (EC )?PRIVATE KEY/, 'no key material in the logs')
})

/** GET /challenge as nginx forwards it, for the agent's certificate. */
async function forwardedGet (g: TestGate, secret: string, cert: Buffer): Promise<string> {
  const value = encodeURIComponent(cert.toString())
  const rid = randomBytes(16).toString('hex')
  const sig = signatureHeader(secret, { t: Math.floor(Date.now() / 1000), rid, method: 'GET', target: '/challenge', verify: 'SUCCESS', cert: value })
  const res = await request(`http://127.0.0.1:${new URL(g.url).port}/challenge`, { headers: { [HEADERS.cert]: value, [HEADERS.verify]: 'SUCCESS', [HEADERS.signature]: sig } })
  const body = await res.body.json() as { code?: string }
  return res.statusCode === 200 ? 'accepted' : `${res.statusCode} ${body.code ?? ''}`
}

async function rotateCa (t: Test, g: TestGate, bundle: string, next: Buffer, count: number): Promise<void> {
  writeFileSync(bundle, next)
  await waitLog(g, /client CA bundle reloaded/, count)
  t.pass('the bundle was reloaded')
}

t.test('direct: the client CA rotates; an agent of the new CA passes, one of the removed CA is refused', async (t) => {
  const newCa = mintCa('new agent CA')
  const fresh = mintCert({ name: 'fresh', issuer: newCa })
  const bundle = join(mkdtempSync(join(tmpdir(), 'aog-reload-')), 'cas.pem')
  writeFileSync(bundle, pem('ca.pem'))
  const g = await startGate(t, { clientCa: bundle }, { watchMs: 50 })
  const old = createAgent({ url: g.url, ...agentFiles('agent'), connections: 1 })
  t.teardown(() => old.close())
  t.equal(await outcome(getChallenge(old)), 'accepted', 'an agent of the dev CA, kept alive')
  const one = async (a: Minted | ReturnType<typeof agentFiles>): Promise<string> => { const c = createAgent({ url: g.url, ...a }); try { return await outcome(getChallenge(c)) } finally { await c.close() } }
  t.match(await one(fresh), /^transport/, 'an agent of the new CA is refused before the rotation')

  await rotateCa(t, g, bundle, Buffer.concat([pem('ca.pem'), newCa.cert]), 1)
  t.equal(await one(fresh), 'accepted', 'both CAs: the new agent passes')
  t.equal(await one(agentFiles('agent2')), 'accepted', 'and the old one')

  await rotateCa(t, g, bundle, newCa.cert, 2)
  t.equal(await one(fresh), 'accepted', 'the new CA only: its agent passes')
  t.match(await one(agentFiles('agent2')), /^transport/, 'an agent of the removed CA is refused at the next handshake')
  t.equal(await outcome(getChallenge(old)), '403 AOG_NOT_AUTHORIZED', 'and per request on its kept-alive connection')

  // A bundle with no certificate keeps the new CA.
  writeFileSync(bundle, '# nothing here\n')
  await waitLog(g, /"level":50[^\n]*no certificate in[^\n]*client CA reload failed/)
  t.equal(await one(fresh), 'accepted', 'a broken bundle: the previous CAs stay')
  t.equal(await reloads(g, 'client_ca', 'ok'), 2)
  t.equal(await reloads(g, 'client_ca', 'failed'), 1)
})

t.test('forwarded: the client CA rotates; an agent of a removed CA is refused by the per-request check', async (t) => {
  const newCa = mintCa('new agent CA')
  const fresh = mintCert({ name: 'fresh', issuer: newCa })
  const dir = mkdtempSync(join(tmpdir(), 'aog-reload-'))
  const bundle = join(dir, 'cas.pem')
  writeFileSync(bundle, pem('ca.pem'))
  const secret = randomBytes(24).toString('hex')
  writeFileSync(join(dir, 'secret'), `${secret}\n`)
  const g = await startGate(t, { clientCa: bundle, mode: 'forwarded', forwardSecretFile: join(dir, 'secret') }, { watchMs: 50 })
  t.equal(await forwardedGet(g, secret, pem('agent.pem')), 'accepted')
  t.equal(await forwardedGet(g, secret, fresh.cert), '401 AOG_IDENTITY_REQUIRED', 'not yet an agent CA')
  await rotateCa(t, g, bundle, newCa.cert, 1)
  t.equal(await forwardedGet(g, secret, fresh.cert), 'accepted', 'the new CA\'s agent passes')
  t.match(await forwardedGet(g, secret, pem('agent.pem')), /^40[13] /, 'the removed CA\'s agent is refused')
})

t.test('the log level: SIGHUP re-reads it from the config file; a broken config file keeps the current one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-reload-'))
  const conf = join(dir, 'aog.json')
  const base = { tlsCert: join(DEV, 'server.pem'), tlsKey: join(DEV, 'server-key.pem'), clientCa: join(DEV, 'ca.pem'), iterations: 4096, checkpointInterval: 256, workers: 1 }
  writeFileSync(conf, JSON.stringify({ ...base, logLevel: 'info' }))
  const s = await startServer(['--config', conf])
  t.teardown(() => { s.child.kill('SIGKILL') })
  const requestLines = async (): Promise<number> => {
    const a = createAgent({ url: s.url, ...agentFiles('agent') })
    try { await getChallenge(a) } finally { await a.close() }
    await sleep(500) // the log is flushed every 200 ms
    return s.lines.filter((l) => l.msg === 'request').length
  }
  const hup = async (config: string, until: (l: Record<string, unknown>) => boolean): Promise<void> => {
    writeFileSync(conf, config)
    const before = s.lines.filter(until).length
    s.child.kill('SIGHUP')
    const end = Date.now() + 5000
    while (s.lines.filter(until).length === before && Date.now() < end) await sleep(50)
  }
  t.equal(await requestLines(), 1, 'at info: a request line')
  await hup(JSON.stringify({ ...base, logLevel: 'warn' }), (l) => l.msg === 'log level reloaded')
  t.match(s.lines.filter((l) => l.msg === 'log level reloaded').at(-1), { level: 30, logLevel: 'warn', previous: 'info' }, 'the change is logged')
  t.equal(await requestLines(), 1, 'at warn: no request line')
  await hup(JSON.stringify({ ...base, logLevel: 'info' }) + '{', (l) => /log level reload failed/.test(String(l.msg)))
  t.ok(s.lines.some((l) => l.level === 50 && /log level reload failed/.test(String(l.msg))), 'a broken config file: logged at error')
  t.equal(await requestLines(), 1, 'the level stays warn')
  await hup(JSON.stringify({ ...base, logLevel: 'info' }), (l) => l.msg === 'log level reloaded')
  t.equal(await requestLines(), 2, 'back at info: request lines again')
  t.equal(await reloads(s, 'log_level', 'ok'), 2)
})

t.test('one SIGHUP reloads the client CAs, the CRL and the deny list once each', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-reload-'))
  writeFileSync(join(dir, 'deny'), '# none\n')
  const g = await startGate(t, { crl: join(DEV, 'crl.pem'), denyFile: join(dir, 'deny') }, { watchMs: 0 })
  const before = { ca: await reloads(g, 'client_ca', 'ok'), crl: await reloads(g, 'crl', 'ok'), deny: await reloads(g, 'deny', 'ok') }
  g.gate.reload()
  t.equal(await reloads(g, 'client_ca', 'ok') - before.ca, 1, 'client CAs once')
  t.equal(await reloads(g, 'crl', 'ok') - before.crl, 1, 'the CRL once')
  t.equal(await reloads(g, 'deny', 'ok') - before.deny, 1, 'the deny list once')
})
