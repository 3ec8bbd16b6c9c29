/**
 * The attestation claim policy (lib/attestation-policy.ts) and the attestation options of the
 * configuration: a bad policy file or combination stops the start naming the field.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, describeOptions, loadConfig } from '../../lib/config.js'
import { claimAllowed, claimAt, claimBinds, compileAttestationPolicy, readAttestationPolicy } from '../../lib/attestation-policy.js'
import { createAttestationVerifier } from '../../lib/attestation.js'
import { AZURE, CONFIDENTIAL_SPACE, DEV_ATTESTATION_JWKS, twoServicePolicy, writeJson } from '../integration/attestation-fixtures.js'

const tls = { tlsCert: 'a.pem', tlsKey: 'b.pem', clientCa: 'c.pem' }
const G = 'https://www.googleapis.com/service_accounts/v1/metadata/jwk/signer@confidentialspace-sign.iam.gserviceaccount.com'
const A = 'https://aogtest.eus.attest.azure.net/certs'

function problems (raw: Record<string, unknown>): Array<[string, string]> {
  try {
    loadConfig(raw)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    return err.message.split('\n').slice(1).map((l) => {
      const m = /^ {2}(\w+): (.*)$/.exec(l)!
      return [m[1]!, m[2]!]
    })
  }
  return []
}

t.test('a good policy compiles: defaults, $ keys, lists', async (t) => {
  const p = compileAttestationPolicy(twoServicePolicy(G, A), 'default-aud')
  const cs = p.get(CONFIDENTIAL_SPACE)!
  t.same(cs.nonceClaim, ['eat_nonce'])
  t.same(cs.subjectClaim, ['eat_nonce'])
  t.equal(cs.audience, 'https://gate.aog.test', '$audience wins over the default')
  t.same(cs.jwks, [G])
  t.same(cs.claims.map((c) => c.path).sort(), ['dbgstat', 'submods.confidential_space.support_attributes', 'submods.container.image_digest', 'swname'])
  const az = p.get(AZURE)!
  t.same(az.subjectClaim, ['x-ms-runtime', 'client-payload', 'aog_fingerprint'])
  t.equal(az.audience, 'default-aud', 'no $audience: the configured one')
  const bare = compileAttestationPolicy({ 'aog-dev': {} }).get('aog-dev')!
  t.same([bare.noncePath, bare.subjectPath, bare.audience, bare.jwks, bare.claims], ['nonce', 'sub', undefined, undefined, []], 'an entry may name no claim: the binding still holds')
})

t.test('a bad policy is refused with a message naming the issuer and the key', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [[], /must be a JSON object of issuer/],
    [{}, /names no issuer/],
    ['x', /must be a JSON object/],
    [{ '': {} }, /an issuer must be a non-empty string/],
    [{ iss: 'x' }, /"iss": must be an object of claim/],
    [{ iss: { dbgstat: { nested: 1 } } }, /"iss": "dbgstat" must be a string, number or boolean, or a non-empty list of them/],
    [{ iss: { dbgstat: [] } }, /"dbgstat" must be a string, number or boolean/],
    [{ iss: { dbgstat: [null] } }, /"dbgstat" must be/],
    [{ iss: { $nonces: 'x' } }, /"\$nonces" is neither a claim path nor one of \$nonce/],
    [{ iss: { 'a..b': 'x' } }, /"a\.\.b" is neither a claim path/],
    [{ iss: { '.a': 'x' } }, /"\.a" is neither a claim path/],
    [{ iss: { $nonce: 'a..b' } }, /"\$nonce" must be a claim path/],
    [{ iss: { $subject: 5 } }, /"\$subject" must be a claim path/],
    [{ iss: { $audience: '' } }, /"\$audience" must be a non-empty string/],
    [{ iss: { $jwks: [] } }, /"\$jwks" must be a configured JWKS URL or file/],
  ]
  for (const [raw, re] of bad) t.throws(() => compileAttestationPolicy(raw), re, JSON.stringify(raw))
})

t.test('the policy against the sources: $jwks must name one; with several, each issuer names its own', async (t) => {
  const file = writeJson('policy.json', twoServicePolicy(G, A))
  t.ok(readAttestationPolicy(file, [G, A]))
  t.throws(() => readAttestationPolicy(file, [G]), /\$jwks "https:\/\/aogtest\.eus\.attest\.azure\.net\/certs" is not a configured/)
  const loose = writeJson('policy.json', { [CONFIDENTIAL_SPACE]: { dbgstat: 'disabled-since-boot' } })
  t.ok(readAttestationPolicy(loose, [G]), 'one source: $jwks may be left out')
  t.throws(() => readAttestationPolicy(loose, [G, A]), /\$jwks is required when more than one attestation key source/)
  t.throws(() => readAttestationPolicy('/nonexistent/policy.json', [G]), /cannot read \/nonexistent\/policy\.json: ENOENT/)
  const notJson = writeJson('policy.json', 'x')
  writeFileSync(notJson, '{ nope')
  t.throws(() => readAttestationPolicy(notJson, [G]), /is not JSON/)
})

t.test('claim paths, allowed values and binding', async (t) => {
  const p = { a: { b: { c: 'x' } }, arr: ['LATEST', 'STABLE'], n: 3, f: false, proto: Object.create({ inherited: 1 }) as object }
  t.equal(claimAt(p, ['a', 'b', 'c']), 'x')
  t.equal(claimAt(p, ['a', 'b']) !== undefined, true)
  t.equal(claimAt(p, ['a', 'x', 'c']), undefined)
  t.equal(claimAt(p, ['arr', '0']), undefined, 'no indexing into arrays')
  t.equal(claimAt(p, ['proto', 'inherited']), undefined, 'own properties only')
  t.equal(claimAt(p, ['toString']), undefined)
  t.ok(claimAllowed('x', ['x', 'y']))
  t.notOk(claimAllowed('z', ['x', 'y']))
  t.ok(claimAllowed(['LATEST', 'STABLE'], ['STABLE']), 'an array claim: one allowed element')
  t.notOk(claimAllowed(['LATEST'], ['STABLE']))
  t.ok(claimAllowed(false, [false]))
  t.notOk(claimAllowed('false', [false]), 'no coercion')
  t.notOk(claimAllowed(3, ['3']))
  t.notOk(claimAllowed({ a: 1 }, ['[object Object]']))
  t.ok(claimBinds('n', 'n'))
  t.ok(claimBinds(['n', 'f'], 'f'))
  t.notOk(claimBinds(['nn'], 'n'))
  t.notOk(claimBinds(undefined, 'n'))
  t.notOk(claimBinds({ 0: 'n' }, 'n'))
})

t.test('the attestation options of the configuration: bad combinations name their field', async (t) => {
  const policy = writeJson('policy.json', { 'aog-dev': {} })
  t.same(problems({ ...tls, requireAttestation: true }), [['attestationJwks', 'is required when requireAttestation is set (or attestationJwksUrl)']])
  t.same(problems({ ...tls, requireAttestation: true, attestationJwksUrl: G }), [], 'a URL is a key source')
  t.same(problems({ ...tls, attestationJwksUrl: 'http://keys.example/jwks' }).map((p) => p[0]), ['attestationJwksUrl'], 'https only')
  t.same(problems({ ...tls, attestationJwksUrl: `${G}, ${A}` }).map((p) => p[0]), ['attestationJwksUrl'], 'no spaces in the list')
  t.same(problems({ ...tls, attestationJwksUrl: `${G},${G}`, attestationIssuer: 'x' }), [['attestationJwksUrl', 'names a key source twice']])
  t.same(problems({ ...tls, attestationJwksCa: 'ca.pem' }), [['attestationJwksCa', 'requires attestationJwksUrl']])
  t.same(problems({ ...tls, attestationPolicy: policy }), [['attestationPolicy', 'requires attestationJwks or attestationJwksUrl']])
  t.same(problems({ ...tls, attestationJwks: DEV_ATTESTATION_JWKS, attestationPolicy: policy, attestationIssuer: 'aog-dev' }).map((p) => p[0]), ['attestationIssuer'])
  t.same(problems({ ...tls, attestationJwks: DEV_ATTESTATION_JWKS, attestationJwksUrl: G }).map((p) => p[0]), ['attestationPolicy'],
    'two sources, no policy and no issuer: one source could sign for any issuer')
  t.same(problems({ ...tls, attestationJwks: DEV_ATTESTATION_JWKS, attestationJwksUrl: G, attestationIssuer: 'one' }), [], 'two sources of one issuer')
  t.same(problems({ ...tls, attestationJwks: DEV_ATTESTATION_JWKS, attestationPolicy: policy }), [])
  const bad = writeJson('policy.json', { 'aog-dev': { dbgstat: {} } })
  const p = problems({ ...tls, attestationJwks: DEV_ATTESTATION_JWKS, attestationPolicy: bad })
  t.equal(p.length, 1)
  t.equal(p[0]![0], 'attestationPolicy')
  t.match(p[0]![1], `${bad}: "aog-dev": "dbgstat" must be a string, number or boolean, or a non-empty list of them`)
  const twoSources = writeJson('policy.json', twoServicePolicy(G, A))
  t.same(problems({ ...tls, attestationJwksUrl: `${G},${A}`, attestationPolicy: twoSources }), [])
  t.same(problems({ ...tls, attestationJwksUrl: `${G},${A}`, attestationPolicy: policy }).map((q) => q[0]), ['attestationPolicy'], '$jwks required with two sources')
  const c = loadConfig({ ...tls, attestationJwksUrl: `${G},${A}`, attestationPolicy: twoSources })
  t.same([c.attestationJwksTimeoutMs, c.attestationJwksMaxBytes, c.attestationJwksRefreshSeconds, c.attestationJwksCooldownSeconds, c.attestationJwksMaxStaleSeconds], [5000, 262144, 600, 30, 3600], 'defaults')
  t.ok(c.maxBodyBytes >= 65536, 'room for an attestation')
  const types = Object.fromEntries(describeOptions().map((o) => [o.key, o.type]))
  t.equal(types.attestationJwksUrl, 'url')
  t.equal(types.upstream, 'url')
})

t.test('the gate\'s verifier refuses a policy that changed into a bad one since the configuration was read', async (t) => {
  const file = writeJson('policy.json', { 'aog-dev': {} })
  writeFileSync(file, '[]')
  try {
    createAttestationVerifier({ jwksFile: DEV_ATTESTATION_JWKS, policyFile: file, required: true })
    t.fail('expected a ConfigError')
  } catch (err) {
    t.ok(err instanceof ConfigError)
    t.same((err as ConfigError).fields, ['attestationPolicy'])
  }
  t.throws(() => createAttestationVerifier({ jwksFile: join('/nonexistent', 'jwks.json'), required: false }), /attestation JWKS \/nonexistent\/jwks\.json: ENOENT/)
})
