/**
 * Two real attestation services' tokens (shaped like Google Confidential Space's and Azure
 * Attestation's, signed by local keys and published by a real local HTTPS JWKS server: the
 * Google-like one with n/e, the Azure-like one as certificates only), a claim policy for each, and
 * every way a token can be wrong, on the memory store and on Redis. The honest submissions pass;
 * every bad one is refused with a detail that names the claim and never its value, and the count of
 * accepts is exactly the count of honest submissions. A jti is used once.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { SignJWT, decodeJwt } from 'jose'
import type { Config } from '../../lib/config.js'
import { jtiOnceId } from '../../lib/attestation.js'
import { getChallenge, solve, submitTask } from '../../lib/client/agent.js'
import { startGate, type TestGate } from '../helpers/gate.js'
import { REDIS_URL, requireRedis } from '../helpers/redis.js'
import {
  AZURE, CONFIDENTIAL_SPACE, DEV_CA, IMAGE, azureClaims, certOnlyKey, confidentialSpaceClaims, count, issuerKey, startJwksServer,
  submitWith, twoServicePolicy, writeJson, type Answer, type IssuerKey,
} from './attestation-fixtures.js'

interface Services { g: TestGate, google: IssuerKey, azure: IssuerKey, attackerHits: () => number }

async function twoServices (t: Test, over: Partial<Config>): Promise<Services> {
  const jwks = await startJwksServer(t)
  const google = await issuerKey('RS256')
  const azure = certOnlyKey()
  jwks.set('/google', { keys: [google.jwk] })
  jwks.set('/certs', { keys: [azure.jwk] })
  const attacker = await startJwksServer(t)
  const policy = writeJson('policy.json', twoServicePolicy(jwks.url('/google'), jwks.url('/certs')))
  const g = await startGate(t, {
    attestationJwksUrl: `${jwks.url('/google')},${jwks.url('/certs')}`,
    attestationJwksCa: DEV_CA,
    attestationPolicy: policy,
    requireAttestation: true,
    ...over,
  })
  return { g, google, azure, attackerHits: () => attacker.hits.size }
}

const now = (): number => Math.floor(Date.now() / 1000)

/** Every case: its name, how to make its token (or none), and the answer it must get. */
type Make = (nonce: string, f: string) => Promise<string | undefined>
interface Case { name: string, make: Make, outcome: string, detail?: string | RegExp, secrets?: string[] }

function cases (s: Services): Case[] {
  const { google, azure } = s
  const cs = (over: Record<string, unknown> = {}, header?: Record<string, unknown>): Make => async (n, f) => await google.sign(confidentialSpaceClaims(n, f, over), header)
  const az = (over: Record<string, unknown> = {}): Make => async (n, f) => await azure.sign(azureClaims(n, f, over))
  const tee = (n: string, f: string, over: Record<string, unknown>): Record<string, unknown> => ({ ...(azureClaims(n, f)['x-ms-isolation-tee'] as object), ...over })
  const other = randomBytes(16).toString('base64url')
  const stranger = randomBytes(32).toString('hex')
  const invalid = '403 AOG_ATTESTATION_INVALID'
  return [
    { name: 'Confidential Space, honest', make: cs(), outcome: 'accepted' },
    { name: 'Confidential Space, nonces in another order with a third', make: async (n, f) => await google.sign(confidentialSpaceClaims(n, f, { eat_nonce: [f, 'x'.repeat(20), n] })), outcome: 'accepted' },
    { name: 'Azure, honest', make: az(), outcome: 'accepted' },
    { name: 'no attestation', make: async () => undefined, outcome: '400 AOG_BAD_REQUEST' },
    { name: 'not a JWT', make: async () => 'abc.def.ghi', outcome: invalid, detail: 'attestation is not a JWT' },
    {
      name: 'forged: another key under Google\'s kid',
      make: async (n, f) => await (await issuerKey('RS256', google.kid)).sign(confidentialSpaceClaims(n, f)),
      outcome: invalid,
      detail: 'attestation signature or claims invalid',
    },
    { name: 'Azure\'s key signing for Confidential Space', make: async (n, f) => await azure.sign(confidentialSpaceClaims(n, f)), outcome: invalid, detail: 'attestation is signed by a key this gate does not trust' },
    { name: 'Google\'s key signing for Azure', make: async (n, f) => await google.sign(azureClaims(n, f)), outcome: invalid, detail: 'attestation is signed by a key this gate does not trust' },
    {
      name: 'an attacker\'s key announced by jku',
      make: async (n, f) => await (await issuerKey('RS256')).sign(confidentialSpaceClaims(n, f), { jku: 'https://localhost:1/jwks' }),
      outcome: invalid,
      detail: 'attestation is signed by a key this gate does not trust',
    },
    { name: 'alg none', make: async (n, f) => `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify(confidentialSpaceClaims(n, f))).toString('base64url')}.`, outcome: invalid },
    {
      name: 'HS256 keyed with the public key',
      make: async (n, f) => await new SignJWT(confidentialSpaceClaims(n, f)).setProtectedHeader({ alg: 'HS256', kid: google.kid }).sign(Buffer.from(String(google.jwk.n))),
      outcome: invalid,
      detail: 'attestation algorithm not allowed',
    },
    { name: 'an issuer not in the policy', make: cs({ iss: 'https://evil.example' }), outcome: invalid, detail: 'attestation issuer is not in this gate\'s attestation policy' },
    { name: 'no issuer', make: cs({ iss: undefined }), outcome: invalid, detail: 'attestation has no issuer (iss)' },
    { name: 'expired', make: cs({ iat: now() - 7200, nbf: now() - 7200, exp: now() - 60 }), outcome: invalid, detail: 'attestation expired' },
    { name: 'not yet valid', make: cs({ nbf: now() + 600 }), outcome: invalid, detail: 'attestation claim nbf is invalid' },
    { name: 'no exp', make: cs({ exp: undefined }), outcome: invalid, detail: 'attestation claim exp is invalid' },
    { name: 'another audience', make: cs({ aud: 'https://sts.googleapis.com' }), outcome: invalid, detail: 'attestation audience (aud) is not this gate' },
    { name: 'another challenge', make: async (n, f) => await google.sign(confidentialSpaceClaims(n, f, { eat_nonce: [other, f] })), outcome: invalid, detail: 'attestation is for another challenge (claim eat_nonce)', secrets: [other] },
    { name: 'another identity', make: async (n) => await google.sign(confidentialSpaceClaims(n, stranger, { eat_nonce: [n, stranger] })), outcome: invalid, detail: 'attestation subject is not the caller (claim eat_nonce)', secrets: [stranger] },
    { name: 'bound to the identity only', make: async (n, f) => await google.sign(confidentialSpaceClaims(n, f, { eat_nonce: f })), outcome: invalid, detail: 'attestation is for another challenge (claim eat_nonce)' },
    { name: 'a debug image', make: cs({ dbgstat: 'enabled' }), outcome: invalid, detail: 'attestation claim dbgstat is not allowed by the attestation policy', secrets: ['enabled'] },
    {
      name: 'another container',
      make: async (n, f) => await google.sign(confidentialSpaceClaims(n, f, { submods: { ...(confidentialSpaceClaims(n, f).submods as object), container: { image_digest: 'sha256:' + 'ee'.repeat(32) } } })),
      outcome: invalid,
      detail: 'attestation claim submods.container.image_digest is not allowed by the attestation policy',
      secrets: ['ee'.repeat(32), IMAGE],
    },
    {
      name: 'an experimental image',
      make: async (n, f) => await google.sign(confidentialSpaceClaims(n, f, { submods: { ...(confidentialSpaceClaims(n, f).submods as object), confidential_space: { support_attributes: ['EXPERIMENTAL'] } } })),
      outcome: invalid,
      detail: 'attestation claim submods.confidential_space.support_attributes is not allowed by the attestation policy',
      secrets: ['EXPERIMENTAL'],
    },
    { name: 'no submods', make: cs({ submods: undefined }), outcome: invalid, detail: /^attestation claim submods\.(container\.image_digest|confidential_space\.support_attributes) is missing \(required by the attestation policy\)$/ },
    { name: 'a plain VM', make: cs({ swname: 'GCE' }), outcome: invalid, detail: 'attestation claim swname is not allowed by the attestation policy', secrets: ['GCE'] },
    { name: 'Azure, debuggable', make: async (n, f) => await azure.sign(azureClaims(n, f, { 'x-ms-isolation-tee': tee(n, f, { 'x-ms-sevsnpvm-is-debuggable': true }) })), outcome: invalid, detail: 'attestation claim x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable is not allowed by the attestation policy' },
    { name: 'Azure, not compliant', make: async (n, f) => await azure.sign(azureClaims(n, f, { 'x-ms-isolation-tee': tee(n, f, { 'x-ms-compliance-status': 'not-compliant' }) })), outcome: invalid, detail: 'attestation claim x-ms-isolation-tee.x-ms-compliance-status is not allowed by the attestation policy', secrets: ['not-compliant'] },
    { name: 'Azure, SGX', make: az({ 'x-ms-attestation-type': 'sgx' }), outcome: invalid, detail: 'attestation claim x-ms-attestation-type is not allowed by the attestation policy' },
    { name: 'Azure, another challenge', make: async (_n, f) => await azure.sign(azureClaims(other, f)), outcome: invalid, detail: 'attestation is for another challenge (claim x-ms-runtime.client-payload.nonce)', secrets: [other] },
    { name: 'Azure, no fingerprint in the payload', make: async (n, f) => await azure.sign(azureClaims(n, f, { 'x-ms-runtime': { 'client-payload': { nonce: n } } })), outcome: invalid, detail: 'attestation subject is not the caller (claim x-ms-runtime.client-payload.aog_fingerprint)' },
    { name: 'Azure, a jti that is not a string', make: az({ jti: 42 }), outcome: invalid, detail: 'attestation claim jti is invalid' },
  ]
}

async function matrix (t: Test, over: Partial<Config>, store: string): Promise<void> {
  const s = await twoServices(t, over)
  const agent = s.g.agent()
  const all = cases(s)
  let honest = 0
  for (const c of all) {
    const a: Answer = await submitWith(agent, async (ch, f) => await c.make(ch.nonce, f))
    t.equal(a.outcome, c.outcome, `${store}: ${c.name}: ${c.outcome}`)
    if (c.detail !== undefined) t.match(a.detail, typeof c.detail === 'string' ? new RegExp(`^${c.detail.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) : c.detail, `${store}: ${c.name}: the detail`)
    for (const secret of [...(c.secrets ?? []), agent.fingerprint]) t.notOk(a.detail.includes(secret), `${store}: ${c.name}: the detail holds no value from the token`)
    if (c.outcome === 'accepted') honest++
  }
  t.equal(await count(s.g.metrics.grantsIssued), honest, `${store}: accepts = honest submissions (${honest})`)
  t.equal(await count(s.g.metrics.attestationOutcomes, { result: 'accepted' }), honest)
  t.equal(await count(s.g.metrics.attestationOutcomes, { issuer: CONFIDENTIAL_SPACE, result: 'accepted' }), 2)
  t.equal(await count(s.g.metrics.attestationOutcomes, { issuer: AZURE, result: 'accepted' }), 1)
  t.equal(await count(s.g.metrics.attestationOutcomes, { issuer: CONFIDENTIAL_SPACE, result: 'rejected', reason: 'policy' }), 5)
  t.equal(await count(s.g.metrics.attestationOutcomes, { issuer: 'unknown', result: 'rejected', reason: 'issuer' }), 2, 'an unknown issuer is labelled unknown')
  t.equal(s.attackerHits(), 0, 'a jku header is never followed')
}

/** Two challenges, one Confidential Space token for each with the same jti: the second is refused. */
async function replay (t: Test, over: Partial<Config>, store: string, redis?: Redis, prefix?: string): Promise<void> {
  const s = await twoServices(t, over)
  const agent = s.g.agent()
  const jti = randomBytes(16).toString('hex')
  let first: string | undefined
  const a = await submitWith(agent, async (c, f) => (first = await s.google.sign(confidentialSpaceClaims(c.nonce, f, { jti }))))
  t.equal(a.outcome, 'accepted', `${store}: the first use of a jti`)
  const b = await submitWith(agent, async (c, f) => await s.google.sign(confidentialSpaceClaims(c.nonce, f, { jti })))
  t.same(b, { outcome: '403 AOG_ATTESTATION_INVALID', detail: 'attestation already used' }, `${store}: its second use`)
  // One token carrying two challenges' nonces (Confidential Space allows six): one pass, not two.
  const agent2 = s.g.agent('agent2')
  const c1 = await getChallenge(agent2)
  const c2 = await getChallenge(agent2)
  const both = await s.google.sign(confidentialSpaceClaims(c1.nonce, agent2.fingerprint, { eat_nonce: [c1.nonce, c2.nonce, agent2.fingerprint], jti: randomBytes(8).toString('hex') }))
  const r1 = await submitTask(agent2, { ...solve(c1, agent2.fingerprint), attestation: both }).then(() => 'accepted', (e: Error) => e.message)
  const r2 = await submitTask(agent2, { ...solve(c2, agent2.fingerprint), attestation: both }).then(() => 'accepted', (e: Error) => e.message)
  t.same([r1, r2], ['accepted', '403 AOG_ATTESTATION_INVALID: attestation already used'], `${store}: a token for two challenges passes one`)
  t.equal(await count(s.g.metrics.grantsIssued), 2)
  t.equal(await count(s.g.metrics.attestationOutcomes, { issuer: CONFIDENTIAL_SPACE, result: 'rejected', reason: 'replayed' }), 2)
  if (redis !== undefined && prefix !== undefined) {
    const key = `${prefix}{${Buffer.from(agent.fingerprint, 'hex').toString('base64url')}}:o:${jtiOnceId(CONFIDENTIAL_SPACE, jti)}`
    const ttl = await redis.pttl(key)
    const exp = decodeJwt(first!).exp! * 1000
    t.ok(ttl > 0 && ttl <= exp - Date.now() + 7000 && ttl > exp - Date.now() - 5000, `${store}: the jti is kept in Redis until the token's exp (${ttl} ms)`)
  }
}

t.test('memory store: the attack matrix', async (t) => { await matrix(t, {}, 'memory') })
t.test('memory store: a jti is used once', async (t) => { await replay(t, {}, 'memory') })

t.test('Redis: the attack matrix and a jti used once', async (t) => {
  await requireRedis()
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const prefix = `aogatt${randomBytes(3).toString('hex')}:`
  const over: Partial<Config> = { store: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix }
  await matrix(t, over, 'redis')
  await replay(t, over, 'redis', redis, prefix)
})
