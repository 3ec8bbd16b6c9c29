/**
 * Signature-agent key directories against a real HTTPS server (node:https with the dev PKI:
 * certs/dev/server.pem for localhost, trusted through certs/dev/ca.pem): cache by max-age on a fake
 * clock and its clamp, stale keys within a day then 'no-keys', redirect, 500, oversized and slow
 * answers refused, one fetch for 200 concurrent first lookups, rotation after expiry, refresh(),
 * the allow list, an untrusted server, and a signed request verified end to end with the keys.
 */
import t, { type Test } from 'tap'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createPublicKey, type KeyObject } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { createKeyDirectories, WELL_KNOWN_DIRECTORY, type FetchReport, type KeyDirectories, type KeyDirectoriesOptions } from '../../lib/webbotauth/directory.js'
import { keyThumbprint, verifyRequest } from '../../lib/webbotauth/httpsig.js'
import { signRequest } from '../../lib/webbotauth/sign.js'
import { pem } from '../helpers/pki.js'
import { keyPair } from '../helpers/keys.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** The directory server: one handler per path, and the requests each path received. */
const routes = new Map<string, Handler>()
const hits = new Map<string, number>()
const server: Server = createServer({ key: pem('server-key.pem'), cert: pem('server.pem') }, (req, res) => {
  const path = req.url ?? '/'
  hits.set(path, (hits.get(path) ?? 0) + 1)
  const h = routes.get(path)
  if (h === undefined) {
    res.writeHead(404).end()
    return
  }
  h(req, res)
})
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
t.teardown(() => {
  server.closeAllConnections()
  server.close()
})
const PORT = (server.address() as AddressInfo).port
const ORIGIN = `https://localhost:${PORT}`
const CA = pem('ca.pem')

function ed (): { priv: KeyObject, pub: KeyObject, kid: string } {
  const priv = keyPair('ed25519').privateKey
  const pub = createPublicKey(priv)
  return { priv, pub, kid: keyThumbprint(pub) }
}
function jwks (...keys: KeyObject[]): string {
  return JSON.stringify({ keys: keys.map((k) => { const j = k.export({ format: 'jwk' }); return { kty: j.kty, crv: j.crv, x: j.x } }) })
}
/** Serve `body` (a JWKS) with Cache-Control `cc` at `path`. */
function serve (path: string, body: () => string, cc?: string): void {
  routes.set(path, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/http-message-signatures-directory+json', ...(cc === undefined ? {} : { 'cache-control': cc }) })
    res.end(body())
  })
}
const count = (path: string): number => hits.get(path) ?? 0

let paths = 0
/** A fresh path on the server, so that tests do not share counts. */
function fresh (): string { return `/d${++paths}` }

interface Rig {
  d: KeyDirectories
  reports: Array<[string, FetchReport]>
  clock: { now: number }
}
function rig (t: Test, allow: KeyDirectoriesOptions['allow'], more: Partial<KeyDirectoriesOptions> = {}): Rig {
  const clock = { now: 1_800_000_000_000 }
  const reports: Array<[string, FetchReport]> = []
  const d = createKeyDirectories({ allow, ca: CA, timeoutMs: 3000, maxBytes: 4096, now: () => clock.now, onFetch: (u, r) => reports.push([u, r]), ...more })
  t.teardown(d.close)
  return { d, reports, clock }
}

t.test('cached for max-age on the clock: no fetch while fresh, one when stale', async (t) => {
  const p = fresh()
  const a = ed()
  serve(p, () => jwks(a.pub), 'public, max-age=120')
  const { d, reports, clock } = rig(t, [{ url: ORIGIN + p }])
  const k = await d.resolve(ORIGIN + p, a.kid)
  t.equal(keyThumbprint(k as KeyObject), a.kid)
  t.match(reports, [[ORIGIN + p, { outcome: 'ok', keys: 1, ttlSeconds: 120, status: 200 }]])
  clock.now += 119_999
  t.equal(await d.resolve(ORIGIN + p, a.kid), k, 'the same parsed key')
  t.equal(count(p), 1)
  clock.now += 1
  t.ok(await d.resolve(ORIGIN + p, a.kid))
  t.equal(count(p), 2, 'fetched again at max-age')
  t.equal(await d.resolve(ORIGIN + p, ed().kid), undefined, 'an unknown keyid does not fetch')
  t.equal(count(p), 2)
})

t.test('max-age is clamped to [60 s, 1 day]; none is 60 s', async (t) => {
  for (const [cc, ttl] of [['max-age=5', 60], ['max-age=31536000', 86_400], [undefined, 60], ['no-store', 60]] as const) {
    const p = fresh()
    const a = ed()
    serve(p, () => jwks(a.pub), cc)
    const { d, reports, clock } = rig(t, [{ url: ORIGIN + p }])
    t.ok(await d.resolve(ORIGIN + p, a.kid))
    t.equal(reports[0]![1].ttlSeconds, ttl, `${cc ?? 'no Cache-Control'}: ${ttl} s`)
    clock.now += ttl * 1000 - 1
    await d.resolve(ORIGIN + p, a.kid)
    t.equal(count(p), 1)
    clock.now += 1
    await d.resolve(ORIGIN + p, a.kid)
    t.equal(count(p), 2)
  }
})

t.test('a failing directory: stale keys serve for at most a day, then no-keys; retries wait retrySeconds', async (t) => {
  const p = fresh()
  const a = ed()
  let ok = true
  routes.set(p, (_req, res) => {
    if (ok) res.writeHead(200, { 'cache-control': 'max-age=60' }).end(jwks(a.pub))
    else res.writeHead(500).end('down')
  })
  const { d, reports, clock } = rig(t, [{ url: ORIGIN + p }], { retrySeconds: 30 })
  const t0 = clock.now
  t.ok(await d.resolve(ORIGIN + p, a.kid))
  ok = false
  clock.now = t0 + 60_000
  t.ok(await d.resolve(ORIGIN + p, a.kid), 'stale but served')
  t.equal(count(p), 2)
  t.match(reports.at(-1), [ORIGIN + p, { outcome: 'status', status: 500 }])
  clock.now += 29_999
  t.ok(await d.resolve(ORIGIN + p, a.kid))
  t.equal(count(p), 2, 'no retry within retrySeconds')
  clock.now += 1
  t.ok(await d.resolve(ORIGIN + p, a.kid))
  t.equal(count(p), 3, 'a retry after retrySeconds')
  clock.now = t0 + 60_000 + 86_400_000 - 1
  t.ok(await d.resolve(ORIGIN + p, a.kid), 'still within the day')
  clock.now += 1
  t.equal(await d.resolve(ORIGIN + p, a.kid), 'no-keys', 'a day past stale: no keys (503 at the gate)')
  ok = true
  clock.now += 30_000
  t.ok(await d.resolve(ORIGIN + p, a.kid), 'back once the directory answers')
})

t.test('never fetched: no-keys (fail closed), for every kind of failure', async (t) => {
  const target = fresh()
  serve(target, () => jwks(ed().pub))
  const cases: Array<[string, Handler, RegExp | string]> = [
    ['redirect', (_req, res) => { res.writeHead(302, { location: ORIGIN + target }).end() }, 'redirect'],
    ['500', (_req, res) => { res.writeHead(500).end() }, 'status'],
    ['204', (_req, res) => { res.writeHead(204).end() }, 'status'],
    ['declared oversized', (_req, res) => { res.writeHead(200, { 'content-length': 5000 }).end('x'.repeat(5000)) }, 'too_large'],
    ['streamed oversized', (_req, res) => {
      res.writeHead(200)
      const chunk = JSON.stringify({ keys: [] }).padEnd(1024, ' ')
      for (let i = 0; i < 8; i++) res.write(chunk)
      res.end()
    }, 'too_large'],
    ['not JSON', (_req, res) => { res.writeHead(200).end('<html>') }, 'invalid'],
  ]
  for (const [name, handler, outcome] of cases) {
    const p = fresh()
    routes.set(p, handler)
    const { d, reports } = rig(t, [{ url: ORIGIN + p }])
    t.equal(await d.resolve(ORIGIN + p, ed().kid), 'no-keys', name)
    t.match(reports, [[ORIGIN + p, { outcome }]], `${name}: ${String(outcome)}`)
  }
  t.equal(count(target), 0, 'the redirect was not followed')
})

t.test('a directory that answers with no usable key has none: keys held before are dropped, not served stale; back when it publishes one', async (t) => {
  const p = fresh()
  const a = ed()
  let body = jwks(a.pub)
  serve(p, () => body, 'max-age=600')
  const { d, reports, clock } = rig(t, [{ url: ORIGIN + p }])
  t.ok(await d.resolve(ORIGIN + p, a.kid))
  // The agent retires its last key (or publishes only keys no one should trust).
  clock.now += 600_000
  for (const retired of ['{"keys":[]}', '{"keys":[{"kty":"RSA","n":"x","e":"AQAB"}]}', JSON.stringify({ keys: [{ ...JSON.parse(jwks(a.pub)).keys[0], d: 'leaked' }] })]) {
    body = retired
    t.equal(await d.resolve(ORIGIN + p, a.kid), undefined, `${retired.slice(0, 40)}: the key is unknown (401 at the gate), not served stale, not no-keys`)
    t.match(reports.at(-1), [ORIGIN + p, { outcome: 'empty', keys: 0, ttlSeconds: 60 }], 'max-age=600, asked again after 60 s')
    const fetched = count(p)
    clock.now += 59_999
    t.equal(await d.resolve(ORIGIN + p, a.kid), undefined)
    t.equal(count(p), fetched, 'cached for those 60 s')
    clock.now += 1
  }
  t.match(reports.at(-1), [ORIGIN + p, { skipped: '1 private part published' }])
  const b = ed()
  body = jwks(b.pub)
  t.ok(await d.resolve(ORIGIN + p, b.kid), 'a new key, 60 s after the empty answer')
  t.match(reports.at(-1), [ORIGIN + p, { outcome: 'ok', keys: 1, ttlSeconds: 600 }])
})

t.test('slow answers time out: no headers, or a body that stalls', async (t) => {
  const stalled: ServerResponse[] = []
  const noHeaders = fresh()
  routes.set(noHeaders, (_req, res) => { stalled.push(res) })
  const slowBody = fresh()
  routes.set(slowBody, (_req, res) => {
    res.writeHead(200)
    res.write('{"keys": [')
    stalled.push(res)
  })
  t.teardown(() => { for (const r of stalled) r.destroy() })
  for (const p of [noHeaders, slowBody]) {
    const { d, reports } = rig(t, [{ url: ORIGIN + p }], { timeoutMs: 300 })
    const start = performance.now()
    t.equal(await d.resolve(ORIGIN + p, ed().kid), 'no-keys')
    const took = performance.now() - start
    t.ok(took >= 250 && took < 5000, `gave up after the timeout (${Math.round(took)} ms)`)
    t.match(reports, [[ORIGIN + p, { outcome: 'timeout' }]])
  }
})

t.test('200 concurrent first lookups: one fetch, every lookup answered', async (t) => {
  const p = fresh()
  const a = ed()
  routes.set(p, (_req, res) => {
    setTimeout(() => res.writeHead(200, { 'cache-control': 'max-age=300' }).end(jwks(a.pub)), 100)
  })
  const { d } = rig(t, [{ url: ORIGIN + p }])
  const found = await Promise.all(Array.from({ length: 200 }, (_, i) => d.resolve(ORIGIN + p, i % 2 === 0 ? a.kid : ed().kid)))
  t.equal(count(p), 1, 'one fetch')
  t.equal(found.filter((k) => typeof k === 'object').length, 100)
  t.equal(found.filter((k) => k === undefined).length, 100)
  // And again at expiry: one refetch however many wait.
  const b = ed()
  routes.set(p, (_req, res) => {
    setTimeout(() => res.writeHead(200, { 'cache-control': 'max-age=300' }).end(jwks(b.pub)), 100)
  })
  const { d: d2, clock } = rig(t, [{ url: ORIGIN + p }])
  await d2.resolve(ORIGIN + p, b.kid)
  clock.now += 300_000
  await Promise.all(Array.from({ length: 200 }, () => d2.resolve(ORIGIN + p, b.kid)))
  t.equal(count(p), 3)
})

t.test('rotation: a new key is found once the cache expires, the old one is gone', async (t) => {
  const p = fresh()
  const a = ed()
  const b = ed()
  let current = [a.pub]
  serve(p, () => jwks(...current), 'max-age=600')
  const { d, clock } = rig(t, [{ url: ORIGIN + p }])
  t.ok(await d.resolve(ORIGIN + p, a.kid))
  current = [b.pub]
  t.equal(await d.resolve(ORIGIN + p, b.kid), undefined, 'not before expiry')
  clock.now += 600_000
  t.ok(await d.resolve(ORIGIN + p, b.kid), 'after expiry')
  t.equal(await d.resolve(ORIGIN + p, a.kid), undefined, 'the removed key no longer verifies')
  // refresh() (SIGHUP) does not wait for expiry.
  current = [a.pub, b.pub]
  await d.refresh()
  t.ok(await d.resolve(ORIGIN + p, a.kid))
})

t.test('refresh(): every directory fetched again, retry wait or not; a failure keeps the keys', async (t) => {
  const p1 = fresh()
  const p2 = fresh()
  const a = ed()
  serve(p1, () => jwks(a.pub), 'max-age=3600')
  routes.set(p2, (_req, res) => { res.writeHead(503).end() })
  const { d, reports } = rig(t, [{ url: ORIGIN + p1 }, { url: ORIGIN + p2 }])
  t.ok(await d.resolve(ORIGIN + p1, a.kid))
  t.equal(await d.resolve(ORIGIN + p2, a.kid), 'no-keys')
  await d.refresh()
  t.equal(count(p1), 2)
  t.equal(count(p2), 2, 'refetched despite the retry wait')
  routes.set(p1, (_req, res) => { res.writeHead(500).end() })
  await d.refresh()
  t.ok(await d.resolve(ORIGIN + p1, a.kid), 'a failed refresh keeps fresh keys')
  const outcomes = (n: 1 | 2): string[] => reports.filter(([u]) => u === ORIGIN + (n === 1 ? p1 : p2)).map(([, r]) => r.outcome)
  t.same(outcomes(1), ['ok', 'ok', 'status'])
  t.same(outcomes(2), ['status', 'status', 'status'])
})

t.test('the allow list: an origin means its well-known directory; anything else is unknown', async (t) => {
  const a = ed()
  serve(WELL_KNOWN_DIRECTORY, () => jwks(a.pub))
  const other = fresh()
  const b = ed()
  serve(other, () => jwks(b.pub))
  const { d } = rig(t, [{ url: ORIGIN }, { url: ORIGIN + other }])
  t.same(d.urls, [ORIGIN + WELL_KNOWN_DIRECTORY, ORIGIN + other])
  t.ok(await d.resolve(ORIGIN, a.kid))
  t.ok(await d.resolve(`${ORIGIN}/`, a.kid))
  t.ok(await d.resolve(ORIGIN + WELL_KNOWN_DIRECTORY, a.kid))
  t.equal(await d.resolve(ORIGIN, b.kid), undefined, 'a key of another directory is not this one\'s')
  t.equal(await d.resolve(`https://127.0.0.1:${PORT}`, a.kid), 'unknown-directory')
  t.equal(await d.resolve(`${ORIGIN}/other`, a.kid), 'unknown-directory')
  t.equal(await d.resolve(`http://localhost:${PORT}`, a.kid), 'unknown-directory')
  t.equal(await d.resolve('', a.kid), 'unknown-directory')
  t.equal(count('/other'), 0)
  // Without Signature-Agent: every allowed directory is asked.
  t.equal(keyThumbprint(await d.resolve(undefined, b.kid) as KeyObject), b.kid)
  t.equal(await d.resolve(undefined, ed().kid), undefined)
})

t.test('no Signature-Agent and no directory with keys: no-keys', async (t) => {
  const p = fresh()
  routes.set(p, (_req, res) => { res.writeHead(500).end() })
  const { d } = rig(t, [{ url: ORIGIN + p }])
  t.equal(await d.resolve(undefined, ed().kid), 'no-keys')
})

t.test('no Signature-Agent, a key in no directory that answered, and one directory without keys: no-keys (it may hold the key), not a refusal', async (t) => {
  const a = ed()
  const up = fresh()
  serve(up, () => jwks(a.pub))
  const down = fresh()
  routes.set(down, (_req, res) => { res.writeHead(500).end() })
  const { d } = rig(t, [{ url: ORIGIN + up }, { url: ORIGIN + down }])
  t.equal(keyThumbprint(await d.resolve(undefined, a.kid) as KeyObject), a.kid, 'a key of the directory that answered is found')
  t.equal(await d.resolve(undefined, ed().kid), 'no-keys', 'any other key: cannot be told while the other directory is down')
})

t.test('no Signature-Agent: a key held by a directory whose keys are fresh is answered at once, while another directory is being fetched slowly', async (t) => {
  const a = ed()
  const b = ed()
  const quick = fresh()
  serve(quick, () => jwks(a.pub), 'max-age=3600')
  const slow = fresh()
  let stall = false
  const stalled: ServerResponse[] = []
  t.teardown(() => { for (const r of stalled) r.destroy() })
  routes.set(slow, (_req, res) => {
    if (stall) { stalled.push(res); return }
    res.writeHead(200, { 'cache-control': 'max-age=60' }).end(jwks(b.pub))
  })
  const { d, clock } = rig(t, [{ url: ORIGIN + slow }, { url: ORIGIN + quick }], { timeoutMs: 1000 })
  t.equal(keyThumbprint(await d.resolve(undefined, a.kid) as KeyObject), a.kid, 'both fetched once')
  // The slow directory's keys are due again, and its server now answers nothing.
  clock.now += 120_000
  stall = true
  const start = performance.now()
  const now = d.resolve(undefined, a.kid)
  t.notOk(now instanceof Promise, 'answered without waiting for the slow directory')
  t.equal(keyThumbprint(now as KeyObject), a.kid)
  t.ok(performance.now() - start < 200)
  // A key the fresh directory does not hold waits for the one being fetched (it may hold it): its
  // fetch times out, and the keys it held serve while stale.
  const other = performance.now()
  t.equal(keyThumbprint(await d.resolve(undefined, b.kid) as KeyObject), b.kid)
  t.ok(performance.now() - other >= 900, 'waited for the fetch')
  t.equal(count(slow), 2, 'one refetch of the slow directory, for both lookups')
})

t.test('a server the CA does not vouch for is refused (network), as is one without the private CA', async (t) => {
  const p = fresh()
  serve(p, () => jwks(ed().pub))
  const { d, reports } = rig(t, [{ url: ORIGIN + p }], { ca: undefined })
  t.equal(await d.resolve(ORIGIN + p, ed().kid), 'no-keys')
  t.match(reports, [[ORIGIN + p, { outcome: 'network' }]])
  const rogue = rig(t, [{ url: ORIGIN + p }], { ca: pem('rogue-ca.pem') })
  t.equal(await rogue.d.resolve(ORIGIN + p, ed().kid), 'no-keys')
  t.equal(count(p), 0)
})

t.test('close() ends a fetch in flight; nothing is fetched afterwards', async (t) => {
  const p = fresh()
  const held: ServerResponse[] = []
  routes.set(p, (_req, res) => { held.push(res) })
  t.teardown(() => { for (const r of held) r.destroy() })
  const { d, reports } = rig(t, [{ url: ORIGIN + p }])
  const pending = d.resolve(ORIGIN + p, ed().kid)
  while (count(p) === 0) await sleep(10)
  await d.close()
  t.equal(await pending, 'no-keys')
  t.match(reports, [[ORIGIN + p, { outcome: 'closed' }]])
  t.equal(await d.resolve(ORIGIN + p, ed().kid), 'no-keys')
  await d.refresh()
  t.equal(count(p), 1)
})

t.test('end to end: a request signed by the agent, verified with its directory\'s keys', async (t) => {
  const a = ed()
  serve(WELL_KNOWN_DIRECTORY, () => jwks(a.pub), 'max-age=300')
  const { d } = rig(t, [{ url: ORIGIN }], { now: Date.now })
  const now = Date.now()
  const h = signRequest({ method: 'GET', authority: 'gate.example', target: '/challenge' }, { key: a.priv, directoryUrl: ORIGIN, now })
  const v = await verifyRequest({ method: 'GET', authority: 'gate.example', target: '/challenge', scheme: 'https', headers: h }, { now, skewSeconds: 30, maxValiditySeconds: 300, resolveKey: d.resolve })
  t.match(v, { keyid: a.kid, directory: ORIGIN })
  const stranger = ed()
  const h2 = signRequest({ method: 'GET', authority: 'gate.example', target: '/challenge' }, { key: stranger.priv, directoryUrl: ORIGIN, now })
  await t.rejects(verifyRequest({ method: 'GET', authority: 'gate.example', target: '/challenge', scheme: 'https', headers: h2 }, { now, skewSeconds: 30, maxValiditySeconds: 300, resolveKey: d.resolve }), { code: 'AOG_SIGNATURE_INVALID', detail: 'keyid not in the directory named by Signature-Agent' })
  const h3 = signRequest({ method: 'GET', authority: 'gate.example', target: '/challenge' }, { key: a.priv, directoryUrl: 'https://elsewhere.example', now })
  await t.rejects(verifyRequest({ method: 'GET', authority: 'gate.example', target: '/challenge', scheme: 'https', headers: h3 }, { now, skewSeconds: 30, maxValiditySeconds: 300, resolveKey: d.resolve }), { code: 'AOG_SIGNATURE_INVALID', detail: 'the directory named by Signature-Agent is not allowed' })
})
