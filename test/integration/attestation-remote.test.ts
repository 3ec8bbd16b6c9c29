/**
 * A gate that trusts an attestation service by its JWKS URL (--attestation-jwks-url), against a
 * real local HTTPS JWKS server trusted through --attestation-jwks-ca: the first submissions share
 * one fetch, a rotated key is picked up, an outage is served from the cache for a bounded time and
 * then refused with 503 and Retry-After (never an accept), and a server that misbehaves is never
 * trusted. The fetches and outcomes are counted.
 */
import t, { type Test } from 'tap'
import type { Config } from '../../lib/config.js'
import { createAgent, pass } from '../../lib/client/agent.js'
import { startGate, type TestGate } from '../helpers/gate.js'
import { agentFiles } from '../helpers/pki.js'
import { DEV_CA, count, issuerKey, sleep, startJwksServer, submitWith, type IssuerKey, type JwksServer } from './attestation-fixtures.js'

const ISS = 'https://attest.example'

async function setup (t: Test, over: Partial<Config> = {}, opts: { rogue?: boolean } = {}): Promise<{ g: TestGate, jwks: JwksServer, key: IssuerKey }> {
  const jwks = await startJwksServer(t, opts)
  const key = await issuerKey('ES256')
  jwks.set('/jwks', { keys: [key.jwk] })
  const g = await startGate(t, {
    attestationJwksUrl: jwks.url('/jwks'),
    attestationJwksCa: DEV_CA,
    attestationIssuer: ISS,
    requireAttestation: true,
    attestationJwksTimeoutMs: 500,
    ...over,
  })
  return { g, jwks, key }
}

const good = (key: IssuerKey) => async (c: { nonce: string }, f: string): Promise<string> => await key.sign({ iss: ISS, sub: f, nonce: c.nonce, exp: Math.floor(Date.now() / 1000) + 60 })

t.test('200 concurrent first submissions make one JWKS fetch, and all pass', async (t) => {
  const { g, jwks, key } = await setup(t, { maxQueue: 4000 })
  jwks.delayMs = 250
  const agent = createAgent({ url: g.url, ...agentFiles('agent'), connections: 32, attestation: good(key) })
  t.teardown(() => agent.close())
  const all = await Promise.all(Array.from({ length: 200 }, async () => await pass(agent).then(() => 'accepted', (e: Error) => e.message)))
  t.same(all.filter((r) => r !== 'accepted').slice(0, 3), [], 'no refusal')
  t.equal(all.filter((r) => r === 'accepted').length, 200, 'all accepted')
  t.equal(jwks.hits.get('/jwks'), 1, 'one fetch')
  t.equal(await count(g.metrics.attestationJwksFetches, { url: jwks.url('/jwks'), result: 'ok' }), 1)
  t.equal(await count(g.metrics.attestationOutcomes, { issuer: ISS, result: 'accepted', reason: 'ok' }), 200)
})

t.test('a rotated key is picked up: its new kid triggers a fetch (after the cooldown)', async (t) => {
  const { g, jwks, key } = await setup(t, { attestationJwksCooldownSeconds: 1 })
  const agent = g.agent()
  t.equal((await submitWith(agent, good(key))).outcome, 'accepted')
  const next = await issuerKey('RS256')
  jwks.set('/jwks', { keys: [next.jwk] }) // the old key is retired at the same time
  await sleep(1100)
  t.equal((await submitWith(agent, good(next))).outcome, 'accepted', 'the new key')
  t.equal(jwks.hits.get('/jwks'), 2)
  const retired = await submitWith(agent, good(key))
  t.equal(retired.outcome, '403 AOG_ATTESTATION_INVALID', 'the retired key no longer verifies')
  t.equal(retired.detail, 'attestation is signed by a key this gate does not trust')
})

t.test('an outage: cached keys serve for the stale window, then 503 with Retry-After, never an accept; then recovery', async (t) => {
  const { g, jwks, key } = await setup(t, { attestationJwksRefreshSeconds: 1, attestationJwksMaxStaleSeconds: 2, attestationJwksCooldownSeconds: 1 })
  const agent = g.agent()
  const outcomes: string[] = []
  outcomes.push((await submitWith(agent, good(key))).outcome)
  jwks.mode = 'error'
  await sleep(1200)
  outcomes.push((await submitWith(agent, good(key))).outcome) // stale but within the window
  await sleep(2200)
  const down = await submitWith(agent, good(key)) // past refresh + max stale
  outcomes.push(down.outcome)
  outcomes.push((await submitWith(agent, good(key))).outcome) // within the cooldown: refused at once
  // The forger gets the same answer: nothing is accepted without keys.
  const forger = await issuerKey('ES256')
  outcomes.push((await submitWith(agent, good(forger))).outcome)
  t.same(outcomes, ['accepted', 'accepted', '503 AOG_UNAVAILABLE retry=1', '503 AOG_UNAVAILABLE retry=1', '503 AOG_UNAVAILABLE retry=1'])
  t.match(down.detail, /this nonce is spent/)
  t.ok(await count(g.metrics.attestationJwksFetches, { result: 'status' }) >= 2, 'the failed fetches are counted')
  t.ok(await count(g.metrics.attestationOutcomes, { issuer: ISS, result: 'unavailable', reason: 'keys_unavailable' }) >= 3)
  jwks.mode = 'ok'
  await sleep(1100)
  t.equal((await submitWith(agent, good(key))).outcome, 'accepted', 'the service is back')
  t.equal(await count(g.metrics.attestationOutcomes, { result: 'accepted' }), 3, 'three accepts, all honest')
})

t.test('a JWKS server that misbehaves on the first fetch is never trusted: 503, no accept', async (t) => {
  for (const mode of ['error', 'redirect', 'slow', 'huge', 'not-json'] as const) {
    const { g, jwks, key } = await setup(t, { attestationJwksMaxBytes: 4096 })
    jwks.mode = mode
    const t0 = Date.now()
    const a = await submitWith(g.agent(), good(key))
    t.equal(a.outcome, '503 AOG_UNAVAILABLE retry=30', `${mode}: 503 with the cooldown as Retry-After`)
    t.ok(Date.now() - t0 < 3000, `${mode}: answered within the timeout`)
    t.equal(await count(g.metrics.attestationOutcomes, { result: 'accepted' }), 0)
    t.equal(await count(g.metrics.attestationJwksFetches, { result: 'ok' }), 0)
  }
  const { g, key } = await setup(t, {}, { rogue: true })
  t.equal((await submitWith(g.agent(), good(key))).outcome, '503 AOG_UNAVAILABLE retry=30', 'a server outside the configured CA')
  t.equal(await count(g.metrics.attestationJwksFetches, { result: 'network' }), 1)
})
