/**
 * The CRL in direct mode, over real TLS: one loader for the handshake and the per-request check
 * (DER or PEM, at start-up and on reload, one CRL per agent CA), a refused reload that changes
 * nothing, and the nextUpdate policy (handshakes go on, revocations stay enforced, /readyz says so).
 */
import t from 'tap'
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { X509Certificate } from 'node:crypto'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import type { TLSSocket } from 'node:tls'
import { request } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { agentFiles, mintCa, mintCert, pem } from '../helpers/pki.js'
import { buildCrl, emptyCrl } from '../helpers/crl.js'
import { certFacts } from '../../lib/identity/der.js'
import { createAgent, getChallenge } from '../../lib/client/agent.js'
import { outcome, sleep } from '../helpers/outcome.js'

const serialOf = (cert: Buffer): Buffer => Buffer.from(certFacts(new X509Certificate(cert).raw).serial, 'hex')
const REVOKED = serialOf(pem('revoked.pem'))
const AGENT2 = serialOf(pem('agent2.pem'))

/** GET /challenge with a fresh handshake (a new undici Agent): 'accepted', '<status> <code>' or 'transport …'. */
async function fresh (g: TestGate, files: { cert: Buffer, key: Buffer, ca: Buffer }): Promise<string> {
  const a = createAgent({ url: g.url, ...files })
  try {
    return await outcome(getChallenge(a))
  } finally {
    await a.close()
  }
}

/** GET /challenge over a node https.Agent that resumes its cached TLS session. */
function resumed (g: TestGate, agent: HttpsAgent): Promise<{ status: number, resumed: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${g.url}/challenge`, { agent }, (res) => {
      const r = (res.socket as TLSSocket).isSessionReused()
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, resumed: r }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function logged (g: TestGate, re: RegExp, count = 1): Promise<void> {
  const end = Date.now() + 5000
  while ((g.logs.join('').match(new RegExp(re, 'g')) ?? []).length < count && Date.now() < end) await sleep(20)
}

async function readyz (g: TestGate): Promise<{ status: number, body: any }> {
  const r = await request(g.opsUrl + '/readyz')
  return { status: r.statusCode, body: await r.body.json() }
}

t.test('a DER CRL at start-up, then PEM to DER on reload: the handshake and the per-request list change together', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-crl-int-'))
  const crl = join(dir, 'agents.crl')
  writeFileSync(crl, buildCrl({ revoked: [{ serial: REVOKED }] })) // DER
  const g = await startGate(t, { crl }, { watchMs: 50 })
  t.equal(await fresh(g, agentFiles('agent')), 'accepted', 'the gate started with a DER CRL')
  t.match(await fresh(g, agentFiles('revoked')), /^transport/, 'the TLS context has the DER CRL: refused at the handshake')

  // Back to an empty PEM CRL (the revoked agent passes and caches a session), then a DER one.
  copyFileSync(emptyCrl(), crl)
  await logged(g, /CRL reloaded/)
  const session = new HttpsAgent({ ...agentFiles('revoked'), keepAlive: false, maxCachedSessions: 10 })
  t.teardown(() => session.destroy())
  t.match(await resumed(g, session), { status: 200 }, 'not revoked by the empty CRL')
  writeFileSync(crl, buildCrl({ revoked: [{ serial: REVOKED }] }))
  await logged(g, /CRL reloaded/, 2)
  t.same(await resumed(g, session), { status: 403, resumed: true }, 'the per-request list has the DER CRL')
  t.match(await fresh(g, agentFiles('revoked')), /^transport/, 'and so has the TLS context')
  t.notMatch(g.logs.join(''), /CRL reload refused|keeping the previous/, 'nothing half-applied')
})

t.test('a delta CRL or one with an unknown critical extension is refused: both uses keep the previous list', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-crl-int-'))
  const crl = join(dir, 'agents.crl')
  writeFileSync(crl, buildCrl({ revoked: [{ serial: REVOKED }], pem: true }))
  const g = await startGate(t, { crl }, { watchMs: 50 })
  const session = new HttpsAgent({ ...agentFiles('agent2'), keepAlive: false, maxCachedSessions: 10 })
  t.teardown(() => session.destroy())
  t.match(await resumed(g, session), { status: 200 })
  const bad = [
    buildCrl({ revoked: [{ serial: AGENT2 }], extensions: [{ oid: '2.5.29.27', critical: true, value: Buffer.from([2, 1, 1]) }] }),
    buildCrl({ revoked: [{ serial: AGENT2 }], extensions: [{ oid: '1.3.6.1.4.1.99999.7', critical: true, value: Buffer.from([5, 0]) }] }),
  ]
  for (const [i, data] of bad.entries()) {
    writeFileSync(crl, data)
    await logged(g, /CRL reload refused/, i + 1)
    t.match(await fresh(g, agentFiles('revoked')), /^transport/, `${i}: the revoked agent is still refused at the handshake`)
    t.match(await resumed(g, session), { status: 200, resumed: true }, `${i}: agent2, listed only by the refused CRL, still passes on its session`)
    t.equal(await fresh(g, agentFiles('agent2')), 'accepted', `${i}: and on a fresh handshake`)
  }
  t.match(await (await request(g.opsUrl + '/metrics')).body.text(), /aog_crl_reloads_total\{result="refused"\} 2/)
})

t.test('one CRL per agent CA in one file: the handshake and the per-request check get both', async (t) => {
  const second = mintCa('Second agent CA')
  const dir = mkdtempSync(join(tmpdir(), 'aog-crl-int-'))
  const bundle = join(dir, 'agent-cas.pem')
  writeFileSync(bundle, Buffer.concat([pem('ca.pem'), second.cert]))
  const b1 = mintCert({ name: 'b1', issuer: second })
  const b2 = mintCert({ name: 'b2', issuer: second })
  const crl = join(dir, 'agents.crl')
  writeFileSync(crl, Buffer.concat([buildCrl({ revoked: [{ serial: REVOKED }], pem: true }), buildCrl({ ca: second, revoked: [{ serial: serialOf(b2.cert) }], pem: true })]))
  const g = await startGate(t, { crl, clientCa: bundle })
  t.equal(await fresh(g, agentFiles('agent')), 'accepted', 'an agent of the first CA')
  t.equal(await fresh(g, b1), 'accepted', 'an agent of the second CA')
  t.match(await fresh(g, agentFiles('revoked')), /^transport/, 'revoked by the first CRL: refused at the handshake')
  t.match(await fresh(g, b2), /^transport/, 'revoked by the second CRL: refused at the handshake')
})

t.test('nextUpdate passes: handshakes go on, revocations stay enforced per request, a warning, a metric, /readyz detail, not ready after the grace', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-crl-int-'))
  const crl = join(dir, 'agents.crl')
  writeFileSync(crl, buildCrl({ revoked: [{ serial: REVOKED }], pem: true }))
  const g = await startGate(t, { crl }, { watchMs: 50 })
  const strict = await startGate(t, { crl, crlGraceSeconds: 0 }, { watchMs: 50 })
  // Once both run, a CRL whose nextUpdate is a few seconds away.
  const nextUpdate = Math.ceil(Date.now() / 1000) * 1000 + 8000
  writeFileSync(crl, buildCrl({ revoked: [{ serial: REVOKED }], nextUpdate: new Date(nextUpdate), pem: true }))
  await logged(g, /CRL reloaded/)
  await logged(strict, /CRL reloaded/)
  t.equal(await fresh(g, agentFiles('agent')), 'accepted')
  t.match(await fresh(g, agentFiles('revoked')), /^transport/, 'while current, the CRL is checked at the handshake')
  t.match(await readyz(g), { status: 200, body: { status: 'ready', crl: { nextUpdate: new Date(nextUpdate).toISOString(), stale: false, handshake: true } } })
  t.equal((await readyz(strict)).status, 200)
  t.ok(Date.now() < nextUpdate - 5000, 'checked before the CRL left the TLS context (else the machine was too slow for this test)')

  while (Date.now() <= nextUpdate + 1000) await sleep(100)
  t.equal(await fresh(g, agentFiles('agent')), 'accepted', 'past nextUpdate: handshakes still succeed')
  t.equal(await fresh(g, agentFiles('revoked')), '403 AOG_NOT_AUTHORIZED', 'and the revoked agent is refused per request')
  t.match(g.logs.join(''), /"level":40[^\n]*past its nextUpdate/, 'a warning')
  t.match(await (await request(g.opsUrl + '/metrics')).body.text(), /aog_crl_stale 1/)
  t.match(await readyz(g), { status: 200, body: { status: 'ready', crl: { stale: true, handshake: false } } }, 'ready within the grace, the detail says stale')
  t.match(await readyz(strict), { status: 503, body: { status: 'unready', problems: [/CRL past its nextUpdate/], crl: { stale: true } } }, 'not ready past the grace')
  // A gate started with the stale CRL serves too.
  const late = await startGate(t, { crl })
  t.equal(await fresh(late, agentFiles('agent')), 'accepted', 'started with a stale CRL: handshakes succeed')
  t.equal(await fresh(late, agentFiles('revoked')), '403 AOG_NOT_AUTHORIZED')
})
