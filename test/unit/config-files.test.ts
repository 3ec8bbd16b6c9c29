/** Issue 21, defect 4: every file the configuration names is checked up front and a bad one names its field. */
import t from 'tap'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { configFileProblems, redactConfig } from '../../lib/config-files.js'
import { loadConfig, PATH_OPTIONS } from '../../lib/config.js'
import { DEV } from '../helpers/pki.js'

const dev = (f: string): string => join(DEV, f)
const dir = mkdtempSync(join(tmpdir(), 'aog-files-'))
const file = (name: string, content: string | Buffer): string => {
  writeFileSync(join(dir, name), content)
  return join(dir, name)
}
const GOOD = {
  tlsCert: dev('server.pem'),
  tlsKey: dev('server-key.pem'),
  clientCa: dev('ca.pem'),
  crl: dev('crl.pem'),
  denyFile: file('deny', `# denied\n${'ab'.repeat(32)}\nsha256 Fingerprint=${Array(32).fill('CD').join(':')}\n`),
  forwardSecretFile: dev('forward-secret'),
  forwardProxyCa: dev('ca.pem'),
  attestationJwks: dev('attestation-jwks.json'),
  attestationJwksCa: dev('ca.pem'),
  upstreamCa: dev('ca.pem'),
  assertionKey: `${dev('assertion-key.pem')}, ${dev('assertion-key-2.pem')}`,
  signatureAgents: dev('signature-agents'),
  signatureAgentsCa: dev('ca.pem'),
}
const CHECKED = Object.keys(GOOD)

function problemsOf (over: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(configFileProblems({ ...GOOD, ...over }).map((p) => [p.field, p.message]))
}

t.test('the dev PKI passes; every path option except devDir and attestationPolicy is checked here', async (t) => {
  t.same(configFileProblems(GOOD), [])
  t.same(PATH_OPTIONS.filter((k) => !CHECKED.includes(k)).sort(), ['attestationPolicy', 'devDir'], 'the policy is read by loadConfig, devDir is a directory to fill')
})

t.test('a missing file names its field, each one, all at once', async (t) => {
  const missing = Object.fromEntries(CHECKED.map((k) => [k, join(dir, `absent-${k}`)]))
  const got = problemsOf(missing)
  t.same(Object.keys(got).sort(), [...CHECKED].sort())
  for (const k of CHECKED) t.match(got[k], new RegExp(`absent-${k} does not exist`), k)
})

t.test('a directory where a file belongs, a key of another certificate, a CA file with no certificate, bad PEM', async (t) => {
  t.match(problemsOf({ tlsCert: dir }), { tlsCert: /is a directory, not a file/ })
  t.same(Object.keys(problemsOf({ tlsKey: dev('agent-key.pem') })), ['tlsKey'])
  t.match(problemsOf({ tlsKey: dev('agent-key.pem') }), { tlsKey: /agent-key\.pem is not the private key of the certificate in .*server\.pem/ })
  t.match(problemsOf({ clientCa: dev('server-key.pem') }), { clientCa: /holds no PEM certificate/ })
  const body = readFileSync(dev('ca.pem'), 'latin1').replace(/-----BEGIN CERTIFICATE-----\n(.{20})/, '-----BEGIN CERTIFICATE-----\n$1garbage!')
  t.match(problemsOf({ upstreamCa: file('broken.pem', body) }), { upstreamCa: /certificate #1 is not a valid PEM certificate/ })
  t.match(problemsOf({ tlsKey: file('key.pem', '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n') }), { tlsKey: /is not an unencrypted PEM or DER private key/ })
  t.same(Object.keys(problemsOf({ tlsCert: dev('agent.pem'), tlsKey: dev('agent-key.pem') })), [], 'a matching pair (whatever it certifies) is a matching pair')
})

t.test('a CRL that the agent CAs did not sign, or that is not a CRL; a CRL directory', async (t) => {
  t.match(problemsOf({ clientCa: dev('rogue-ca.pem') }), { crl: /crl\.pem/ }, 'signed by another CA than clientCa')
  t.match(problemsOf({ crl: dev('ca.pem') }), { crl: /crl|CRL/ }, 'a certificate is not a CRL')
  const crlDir = join(dir, 'crls')
  mkdirSync(crlDir)
  copyFileSync(dev('crl.pem'), join(crlDir, 'crl.pem'))
  t.same(problemsOf({ crl: crlDir }), {}, 'a directory is accepted (read by the revocation module)')
  t.match(problemsOf({ crl: mkdirSync(join(dir, 'no-crls'), { recursive: true }) }), { crl: /no \*\.pem, \*\.crl or \*\.der file/ }, 'an empty CRL directory')
  t.same(Object.keys(problemsOf({ clientCa: join(dir, 'nope.pem') })), ['clientCa'], 'an unusable clientCa is reported once, not again through the CRL')
})

t.test('secrets, keys, JWKS and allow lists must parse as what they are', async (t) => {
  t.match(problemsOf({ denyFile: file('deny-bad', `${'ab'.repeat(32)}\nnot-a-fingerprint\n`) }), { denyFile: /line 2 is not a SHA-256 fingerprint/ })
  t.match(problemsOf({ forwardSecretFile: file('short', 'tooshort\n') }), { forwardSecretFile: /shorter than 16 characters/ })
  t.match(problemsOf({ forwardSecretFile: file('empty', '# nothing\n\n') }), { forwardSecretFile: /holds no secret/ })
  t.match(problemsOf({ attestationJwks: file('jwks.json', '{"keys": [') }), { attestationJwks: /jwks\.json/ })
  t.match(problemsOf({ assertionKey: `${dev('assertion-key.pem')},${dev('server.pem')}` }), { assertionKey: /server\.pem/ }, 'a certificate is not a signing key')
  t.match(problemsOf({ signatureAgents: file('agents-bad', 'https://a.example one two\n') }), { signatureAgents: /line 1/ })
  t.match(problemsOf({ signatureAgents: file('agents-pin', 'https://a.example absent.json\n') }), { signatureAgents: /absent\.json does not exist/ }, 'a pinned JWKS file, relative to the list')
  t.match(problemsOf({ signatureAgents: file('agents-json', `https://a.example ${file('notjson', 'nope')}\n`) }), { signatureAgents: /notjson .*is not JSON/ })
})

t.test('the printed configuration masks credentials in URLs and nothing else', async (t) => {
  const tls = { tlsCert: GOOD.tlsCert, tlsKey: GOOD.tlsKey, clientCa: GOOD.clientCa }
  const c = loadConfig({
    ...tls,
    assertionKey: GOOD.assertionKey,
    store: 'redis',
    redisUrl: 'redis://default:s3cr3t-pass@10.0.0.5:6379/2',
    upstream: 'https://svc:hunter22@app.internal/api',
    attestationJwksUrl: 'https://jwks.example/keys?token=abcdef,https://other.example/jwks',
    attestationIssuer: 'iss',
  })
  const r = redactConfig(c)
  const text = JSON.stringify(r)
  for (const secret of ['s3cr3t-pass', 'hunter22', 'abcdef']) t.notOk(text.includes(secret), `${secret} is not printed`)
  t.equal(r.redisUrl, 'redis://*****:*****@10.0.0.5:6379/2')
  t.equal(r.upstream, 'https://*****:*****@app.internal/api')
  t.equal(r.attestationJwksUrl, 'https://jwks.example/keys?*****,https://other.example/jwks')
  t.equal(r.tlsKey, dev('server-key.pem'), 'paths are printed as they are')
  t.equal(redactConfig(loadConfig(tls)).redisUrl, 'redis://127.0.0.1:6379', 'no password: unchanged')
  t.equal(redactConfig(loadConfig({ ...tls, redisUrl: 'redis://hunter2@10.0.0.5:6379' })).redisUrl, 'redis://*****@10.0.0.5:6379', 'a lone user name (read as the password by some clients) is masked')
})

t.test('redisUrl: a redis:// or rediss:// URL with a port in range (a bare user:pass@host form is refused, never printed)', async (t) => {
  const tls = { tlsCert: GOOD.tlsCert, tlsKey: GOOD.tlsKey, clientCa: GOOD.clientCa }
  for (const [url, why] of [['u:hunter2@h:6379', /must match pattern/], ['redis://u:pw@h:99999', /(port 99999 is above 65535|is not a valid URL)/], ['http://h:6379', /must match pattern/]] as const) {
    const err = t.throws(() => loadConfig({ ...tls, redisUrl: url })) as unknown as { message: string }
    t.match(err.message, new RegExp(`redisUrl: ${why.source}`), url.includes('hunter2') ? 'refused' : url)
    t.notOk(err.message.includes('hunter2'), 'the password is not in the message')
  }
})
