/**
 * A two-tier agent PKI (root → issuing CA → agents) with --crl, in direct and forwarded mode: one
 * CRL per CA in one file or in a CRL directory; a revoked agent, a revoked issuing CA (every agent
 * under it), a CA of the chain without a CRL, and a serial revoked by one CA that another CA also
 * issued. Each CRL counts only for the certificates its issuer issued.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes, X509Certificate } from 'node:crypto'
import { request } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { mintCa, mintCert, mintTwoTier, type Minted, type MintedCa } from '../helpers/pki.js'
import { buildCrl } from '../helpers/crl.js'
import { certFacts } from '../../lib/identity/der.js'
import { signatureHeader, HEADERS } from '../../lib/identity/forwarded.js'
import { createAgent, getChallenge } from '../../lib/client/agent.js'
import { outcome, sleep } from '../helpers/outcome.js'

const serialOf = (cert: Buffer): Buffer => Buffer.from(certFacts(new X509Certificate(cert).raw).serial, 'hex')
const SECRET = randomBytes(24).toString('hex')

/** The CRLs of both CAs (PEM), revoking the given certificates: `root` lists CA certificates, `issuing` agents. */
function crls (pki: { root: MintedCa, issuing: MintedCa }, revoked: { root?: Buffer[], issuing?: Buffer[] } = {}): { root: Buffer, issuing: Buffer } {
  return {
    root: buildCrl({ ca: pki.root, revoked: (revoked.root ?? []).map((c) => ({ serial: serialOf(c) })), pem: true }),
    issuing: buildCrl({ ca: pki.issuing, revoked: (revoked.issuing ?? []).map((c) => ({ serial: serialOf(c) })), pem: true }),
  }
}

/** GET /challenge on a fresh handshake: 'accepted', '<status> <code>' or 'transport …'. */
async function direct (g: TestGate, agent: Minted): Promise<string> {
  const a = createAgent({ url: g.url, ...agent })
  try {
    return await outcome(getChallenge(a))
  } finally {
    await a.close()
  }
}

/** GET /challenge as nginx forwards it: the agent's certificate in signed headers. */
async function forwarded (g: TestGate, agent: Minted): Promise<string> {
  const cert = encodeURIComponent(agent.cert.toString())
  const rid = randomBytes(16).toString('hex')
  const signature = signatureHeader(SECRET, { t: Math.floor(Date.now() / 1000), rid, method: 'GET', target: '/challenge', verify: 'SUCCESS', cert })
  const res = await request(`http://127.0.0.1:${new URL(g.url).port}/challenge`, { headers: { [HEADERS.cert]: cert, [HEADERS.verify]: 'SUCCESS', [HEADERS.signature]: signature } })
  const body = await res.body.json() as { code?: string }
  return res.statusCode === 200 ? 'accepted' : `${res.statusCode} ${body.code ?? ''}`
}

interface Mode { name: string, start: (t: Test, crl: string, bundle: string) => Promise<TestGate>, get: (g: TestGate, a: Minted) => Promise<string>, refused: RegExp }
const MODES: Mode[] = [
  { name: 'direct', start: async (t, crl, clientCa) => await startGate(t, { crl, clientCa }), get: direct, refused: /^transport/ },
  {
    name: 'forwarded',
    start: async (t, crl, clientCa) => {
      const file = join(mkdtempSync(join(tmpdir(), 'aog-2tier-')), 'secret')
      writeFileSync(file, `${SECRET}\n`)
      return await startGate(t, { crl, clientCa, mode: 'forwarded', forwardSecretFile: file })
    },
    get: forwarded,
    refused: /^403 AOG_NOT_AUTHORIZED$/,
  },
]

/** --crl as one file with both CRLs, or as a directory with one file per CA. */
const LAYOUTS = {
  file: (dir: string, c: { root: Buffer, issuing: Buffer }): string => { writeFileSync(join(dir, 'agents.crl'), Buffer.concat([c.root, c.issuing])); return join(dir, 'agents.crl') },
  directory: (dir: string, c: { root: Buffer, issuing: Buffer }): string => { writeFileSync(join(dir, 'root.crl'), c.root); writeFileSync(join(dir, 'issuing.pem'), c.issuing); return dir },
}

for (const mode of MODES) {
  for (const [layout, write] of Object.entries(LAYOUTS)) {
    t.test(`${mode.name}, CRLs in a ${layout}: an agent passes, a revoked agent and every agent under a revoked issuing CA are refused`, async (t) => {
      const pki = mintTwoTier()
      const [a1, a2] = [mintCert({ name: 'a1', issuer: pki.issuing }), mintCert({ name: 'a2', issuer: pki.issuing })]
      const dir = mkdtempSync(join(tmpdir(), 'aog-2tier-'))
      const crl = write(dir, crls(pki))
      const g = await mode.start(t, crl, pki.bundle)
      t.equal(await mode.get(g, a1), 'accepted', 'an agent of the issuing CA, neither revoked')
      t.equal(await mode.get(g, a2), 'accepted', 'another one')
      t.notMatch(g.logs.join(''), /no CRL for this agent CA/, 'both CAs have a CRL')

      write(dir, crls(pki, { issuing: [a1.cert] }))
      g.gate.reload()
      t.match(await mode.get(g, a1), mode.refused, 'the agent revoked by the issuing CA\'s CRL is refused')
      t.equal(await mode.get(g, a2), 'accepted', 'the other agent still passes')

      write(dir, crls(pki, { root: [pki.issuing.cert] }))
      g.gate.reload()
      t.match(await mode.get(g, a1), mode.refused, 'the issuing CA revoked by the root\'s CRL: its agents are refused')
      t.match(await mode.get(g, a2), mode.refused, 'all of them')

      write(dir, crls(pki))
      g.gate.reload()
      t.equal(await mode.get(g, a1), 'accepted', 'both CRLs empty again: the agents pass')
    })
  }
}

t.test('direct: an agent on a kept-alive connection is refused per request once its issuing CA is revoked', async (t) => {
  const pki = mintTwoTier()
  const a1 = mintCert({ name: 'a1', issuer: pki.issuing })
  const dir = mkdtempSync(join(tmpdir(), 'aog-2tier-'))
  const crl = LAYOUTS.file(dir, crls(pki))
  const g = await startGate(t, { crl, clientCa: pki.bundle })
  const agent = createAgent({ url: g.url, ...a1, connections: 1 })
  t.teardown(() => agent.close())
  t.equal(await outcome(getChallenge(agent)), 'accepted')
  LAYOUTS.file(dir, crls(pki, { root: [pki.issuing.cert] }))
  g.gate.reload()
  t.equal(await outcome(getChallenge(agent)), '403 AOG_NOT_AUTHORIZED', 'the same connection: refused by the per-request check of the chain')
})

t.test('a CRL directory: a CRL added to it is picked up by the poll', async (t) => {
  const pki = mintTwoTier()
  const a1 = mintCert({ name: 'a1', issuer: pki.issuing })
  const dir = mkdtempSync(join(tmpdir(), 'aog-2tier-'))
  const c = crls(pki)
  writeFileSync(join(dir, 'root.pem'), c.root)
  writeFileSync(join(dir, 'issuing.crl'), c.issuing)
  writeFileSync(join(dir, 'README.txt'), 'not a CRL: ignored')
  const g = await startGate(t, { crl: dir, clientCa: pki.bundle }, { watchMs: 50 })
  t.equal(await direct(g, a1), 'accepted')
  // The issuing CA's new CRL (a later thisUpdate) comes as a second file (DER) next to the old one.
  writeFileSync(join(dir, 'issuing-2.der'), buildCrl({ ca: pki.issuing, thisUpdate: new Date(), revoked: [{ serial: serialOf(a1.cert) }] }))
  const end = Date.now() + 5000
  while (!/CRL reloaded/.test(g.logs.join('')) && Date.now() < end) await sleep(20)
  t.match(g.logs.join(''), /"crls":2/, 'two CRLs in force: the root\'s, and the newer of the issuing CA\'s two')
  t.match(await direct(g, a1), /^transport/, 'the revocation in the added file is in force')
})

for (const mode of MODES) {
  t.test(`${mode.name}: a CA of the chain without a CRL refuses its agents (fail closed, as OpenSSL's CRL check of the whole chain)`, async (t) => {
    const pki = mintTwoTier()
    const a1 = mintCert({ name: 'a1', issuer: pki.issuing })
    const other = mintCa('other root')
    const b1 = mintCert({ name: 'b1', issuer: other })
    const bundle = join(mkdtempSync(join(tmpdir(), 'aog-2tier-')), 'cas.pem')
    writeFileSync(bundle, Buffer.concat([pki.root.cert, pki.issuing.cert, other.cert]))
    const crl = join(mkdtempSync(join(tmpdir(), 'aog-2tier-')), 'agents.crl')
    // The issuing CA's CRL and the other root's; none for the two-tier root.
    writeFileSync(crl, Buffer.concat([crls(pki).issuing, buildCrl({ ca: other, pem: true })]))
    const g = await mode.start(t, crl, bundle)
    t.match(g.logs.join(''), /"level":40[^\n]*two-tier root[^\n]*no CRL for this agent CA/, 'a warning at start-up names the CA without a CRL')
    t.match(await mode.get(g, a1), mode.refused, 'the agent under the root without a CRL is refused')
    t.equal(await mode.get(g, b1), 'accepted', 'an agent of a CA with a CRL passes')
    if (mode.name === 'direct') {
      t.match(g.logs.join(''), /"level":30[^\n]*"reason":"unable_to_get_crl"[^\n]*TLS handshake refused/, 'the refused handshake is logged with its reason')
    }
  })
}

t.test('forwarded: a serial revoked by one CA does not refuse the same serial issued by another CA', async (t) => {
  const pki = mintTwoTier()
  const other = mintCa('other root')
  const mine = mintCert({ name: 'mine', issuer: pki.issuing, serial: '0x4242' })
  const theirs = mintCert({ name: 'theirs', issuer: other, serial: '0x4242' })
  const bundle = join(mkdtempSync(join(tmpdir(), 'aog-2tier-')), 'cas.pem')
  writeFileSync(bundle, Buffer.concat([pki.root.cert, pki.issuing.cert, other.cert]))
  const crl = join(mkdtempSync(join(tmpdir(), 'aog-2tier-')), 'agents.crl')
  writeFileSync(crl, Buffer.concat([crls(pki).root, crls(pki).issuing, buildCrl({ ca: other, revoked: [{ serial: serialOf(theirs.cert) }], pem: true })]))
  const g = await MODES[1]!.start(t, crl, bundle)
  t.match(await forwarded(g, theirs), /^403 AOG_NOT_AUTHORIZED$/, 'revoked by its own CA')
  t.equal(await forwarded(g, mine), 'accepted', 'the same serial from the issuing CA is not revoked')
})
