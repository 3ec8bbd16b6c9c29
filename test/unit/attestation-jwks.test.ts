/**
 * The remote key source (lib/attestation-jwks.ts) against real local HTTPS JWKS servers: cache,
 * one fetch in flight, refresh on an unknown kid with a cooldown, the outage window then fail
 * closed, and every way a fetch can go wrong (status, redirect, timeout, size, JSON, CA).
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { decodeProtectedHeader, jwtVerify, errors } from 'jose'
import { JwksUnavailableError, RemoteJwks, jwksDispatcher, normaliseJwks, type FetchResult, type RemoteJwksOptions } from '../../lib/attestation-jwks.js'
import { DEV_CA, certOnlyKey, issuerKey, startJwksServer, type IssuerKey, type JwksServer } from '../integration/attestation-fixtures.js'

const CA = readFileSync(DEV_CA)

interface Harness {
  server: JwksServer
  jwks: RemoteJwks
  fetched: FetchResult[]
  clock: { now: number }
  verify: (token: string) => Promise<unknown>
}

async function harness (t: Test, over: Partial<RemoteJwksOptions> = {}, keys: IssuerKey[] = []): Promise<Harness> {
  const server = await startJwksServer(t)
  server.set('/jwks', { keys: keys.map((k) => k.jwk) })
  const dispatcher = jwksDispatcher(CA, 2000)
  t.teardown(() => dispatcher.close())
  const fetched: FetchResult[] = []
  const clock = { now: 1_000_000 }
  const jwks = new RemoteJwks({
    url: server.url('/jwks'),
    dispatcher,
    timeoutMs: 1000,
    maxBytes: 64 * 1024,
    refreshMs: 60_000,
    cooldownMs: 10_000,
    maxStaleMs: 120_000,
    now: () => clock.now,
    onFetch: (r) => { fetched.push(r) },
    ...over,
  })
  return { server, jwks, fetched, clock, verify: async (token) => (await jwtVerify(token, jwks.getKey, { currentDate: new Date(), algorithms: ['RS256', 'ES256', 'EdDSA'] })).payload }
}

const claims = { sub: 'x', exp: Math.floor(Date.now() / 1000) + 600 }

t.test('the keys are fetched once and cached; 200 concurrent first verifications make one fetch', async (t) => {
  const k = await issuerKey('ES256')
  const h = await harness(t, {}, [k])
  h.server.delayMs = 200
  const token = await k.sign(claims)
  const all = await Promise.all(Array.from({ length: 200 }, async () => await h.verify(token)))
  t.equal(all.length, 200)
  t.equal(h.server.hits.get('/jwks'), 1, 'one request to the server')
  t.same(h.fetched, ['ok'])
  await h.verify(token)
  t.equal(h.server.hits.get('/jwks'), 1, 'cached')
})

t.test('rotation: an unknown kid fetches again, at most once per cooldown', async (t) => {
  const old = await issuerKey('RS256')
  const h = await harness(t, {}, [old])
  await h.verify(await old.sign(claims))
  const next = await issuerKey('RS256')
  h.server.set('/jwks', { keys: [old.jwk, next.jwk] })
  const fresh = await next.sign(claims)
  await t.rejects(h.verify(fresh), errors.JWKSNoMatchingKey, 'within the cooldown: no fetch, the kid is unknown')
  t.equal(h.server.hits.get('/jwks'), 1)
  h.clock.now += 10_000
  t.ok(await h.verify(fresh), 'after the cooldown: fetched, and the new key verifies')
  t.equal(h.server.hits.get('/jwks'), 2)
  // A forger's random kids: one fetch per cooldown, however many tokens.
  const forger = await issuerKey('RS256')
  h.clock.now += 10_000
  const forged = await Promise.all(Array.from({ length: 50 }, async () => await h.verify(await forger.sign(claims)).then(() => 'accepted', (e: Error) => e.name)))
  t.same(new Set(forged), new Set(['JWKSNoMatchingKey']), 'every forged token refused')
  t.equal(h.server.hits.get('/jwks'), 3, 'one fetch for fifty unknown kids')
  t.same(new Set(h.fetched), new Set(['ok']))
})

t.test('an outage: the keys held serve until refresh + max stale, then fail closed with a retry time', async (t) => {
  const k = await issuerKey('EdDSA')
  const h = await harness(t, {}, [k])
  const token = await k.sign(claims)
  await h.verify(token)
  h.server.mode = 'error'
  h.clock.now += 60_000 // stale: refreshed in the background, served meanwhile
  t.ok(await h.verify(token), 'stale keys serve')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.same(h.fetched, ['ok', 'status'], 'the background fetch failed')
  h.clock.now += 5_000
  t.ok(await h.verify(token), 'within the cooldown: no new fetch, still served')
  t.equal(h.server.hits.get('/jwks'), 2)
  h.clock.now += 115_000 + 1 // past refresh + max stale
  const err = await h.verify(token).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof JwksUnavailableError, 'too stale: unavailable')
  t.ok((err as JwksUnavailableError).retryAfter >= 1 && (err as JwksUnavailableError).retryAfter <= 10, 'with a retry time within the cooldown')
  t.equal(h.server.hits.get('/jwks'), 3, 'it tried once more first')
  h.clock.now += 1000
  await t.rejects(h.verify(token), JwksUnavailableError, 'within the cooldown after a failure: refused at once')
  t.equal(h.server.hits.get('/jwks'), 3, 'without a fetch')
  h.server.mode = 'ok'
  h.clock.now += 10_000
  t.ok(await h.verify(token), 'the service is back: fetched and served')
  t.same(h.fetched, ['ok', 'status', 'status', 'ok'])
})

t.test('an unknown kid while the service is down: 503 (the key may be a rotated one), never an accept', async (t) => {
  const k = await issuerKey('ES256')
  const h = await harness(t, {}, [k])
  await h.verify(await k.sign(claims))
  h.server.mode = 'error'
  h.clock.now += 10_000
  const other = await issuerKey('ES256')
  await t.rejects(h.verify(await other.sign(claims)), JwksUnavailableError)
})

t.test('a first fetch that fails in any way: unavailable, and the failure named', async (t) => {
  const k = await issuerKey('ES256')
  const token = await k.sign(claims)
  const cases: Array<[JwksServer['mode'], FetchResult]> = [
    ['error', 'status'], ['redirect', 'status'], ['slow', 'timeout'], ['stall-body', 'timeout'],
    ['huge', 'too_large'], ['huge-declared', 'too_large'], ['not-json', 'invalid'],
  ]
  for (const [mode, result] of cases) {
    const h = await harness(t, {}, [k])
    h.server.mode = mode
    const t0 = Date.now()
    await t.rejects(h.verify(token), JwksUnavailableError, `${mode}: unavailable`)
    t.same(h.fetched, [result], `${mode}: ${result}`)
    t.ok(Date.now() - t0 < 3000, `${mode}: within the timeout`)
  }
  // The redirect's target serves a good JWKS: it is still not followed.
  const h = await harness(t, {}, [k])
  h.server.set('/elsewhere/jwks', { keys: [k.jwk] })
  h.server.mode = 'redirect'
  await t.rejects(h.verify(token), JwksUnavailableError)
  t.equal(h.server.hits.get('/elsewhere/jwks'), undefined, 'the redirect was not followed')
})

t.test('a JWKS without a usable key is a failed fetch: the keys held stay', async (t) => {
  const k = await issuerKey('ES256')
  const h = await harness(t, {}, [k])
  const token = await k.sign(claims)
  await h.verify(token)
  h.server.set('/jwks', { keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: k.kid }] })
  h.clock.now += 60_000
  await h.verify(token)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.same(h.fetched, ['ok', 'invalid'])
  h.clock.now += 10_000
  t.ok(await h.verify(token), 'the previous keys still verify')
})

t.test('a server whose certificate does not chain to the configured CA is never trusted', async (t) => {
  const k = await issuerKey('ES256')
  const rogue = await startJwksServer(t, { rogue: true })
  rogue.set('/jwks', { keys: [k.jwk] })
  const dispatcher = jwksDispatcher(CA, 1000)
  t.teardown(() => dispatcher.close())
  const seen: FetchResult[] = []
  const jwks = new RemoteJwks({ url: rogue.url('/jwks'), dispatcher, timeoutMs: 1000, maxBytes: 65536, refreshMs: 1000, cooldownMs: 1000, maxStaleMs: 0, onFetch: (r) => { seen.push(r) } })
  await t.rejects(jwtVerify(await k.sign(claims), jwks.getKey), JwksUnavailableError)
  t.same(seen, ['network'])
})

t.test('normaliseJwks: private members dropped, encryption keys skipped, certificate-only keys (Azure) get their public key', async (t) => {
  const az = certOnlyKey()
  const rsa = await issuerKey('RS256')
  const out = normaliseJwks({ keys: [az.jwk, { ...rsa.jwk, d: 'secret', p: 'x' }, { ...rsa.jwk, kid: 'enc', use: 'enc' }, { kty: 'oct', k: 'AAAA' }, 'junk', { kty: 'RSA', kid: 'empty' }] })
  t.equal(out.keys.length, 2)
  t.equal(out.keys[0]!.kid, az.kid)
  t.equal(out.keys[0]!.kty, 'RSA')
  t.type(out.keys[0]!.n, 'string', 'n from the certificate')
  t.notOk('d' in out.keys[1]! || 'p' in out.keys[1]!, 'no private member')
  t.throws(() => normaliseJwks({ keys: [] }), /no usable/)
  t.throws(() => normaliseJwks([]), /not a JWKS/)
  // The certificate-only key verifies a token of its issuer, through a real fetch.
  const h = await harness(t, {}, [az])
  const token = await az.sign(claims, { jku: 'https://attacker.example/certs' })
  t.equal(decodeProtectedHeader(token).jku, 'https://attacker.example/certs')
  t.ok(await h.verify(token), 'verified with the configured source; the jku header is not followed')
})
