/**
 * Direct mode checks the client certificate's dates on every request, not once per connection:
 * a kept-alive connection and a resumed TLS session (no certificate verification at resumption)
 * both outlive the handshake's check. Real TLS, a certificate of the dev CA valid for seconds.
 */
import t from 'tap'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import type { TLSSocket } from 'node:tls'
import { startGate } from '../helpers/gate.js'
import { mintCert } from '../helpers/pki.js'
import { createAgent, getChallenge } from '../../lib/client/agent.js'
import { outcome, sleep } from '../helpers/outcome.js'

interface Got { status: number, keptAlive: boolean, resumed: boolean, code?: string }

function get (url: string, agent: HttpsAgent): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${url}/challenge`, { agent }, (res) => {
      let body = ''
      const resumed = (res.socket as TLSSocket).isSessionReused()
      res.on('data', (d) => { body += String(d) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, keptAlive: req.reusedSocket, resumed, code: (JSON.parse(body) as { code?: string }).code }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a certificate that expires after its handshake is refused with 401 on its next request: kept-alive connection and resumed session', async (t) => {
  // A keep-alive timeout longer than the wait, so the kept-alive connection really is the same one.
  const g = await startGate(t, { keepAliveTimeoutMs: 60_000 })
  const now = Date.now()
  const notAfter = new Date(Math.ceil(now / 1000) * 1000 + 5000)
  const c = mintCert({ name: 'short-lived', notBefore: new Date(now - 60_000), notAfter })
  const files = { cert: c.cert, key: c.key, ca: c.ca }
  const keep = new HttpsAgent({ ...files, keepAlive: true, maxSockets: 1 })
  const resume = new HttpsAgent({ ...files, keepAlive: false, maxCachedSessions: 10 })
  t.teardown(() => { keep.destroy(); resume.destroy() })

  t.match(await get(g.url, keep), { status: 200 }, 'within its dates')
  t.match(await get(g.url, keep), { status: 200, keptAlive: true }, 'again on the kept-alive connection')
  t.match(await get(g.url, resume), { status: 200, keptAlive: false })
  t.match(await get(g.url, resume), { status: 200, keptAlive: false, resumed: true }, 'a new connection resuming the TLS session')
  t.ok(Date.now() < notAfter.getTime() - 250, 'the first requests ran before notAfter (else the machine was too slow for this test)')

  while (Date.now() <= notAfter.getTime() + 1100) await sleep(100)
  t.same(await get(g.url, keep), { status: 401, keptAlive: true, resumed: false, code: 'AOG_IDENTITY_REQUIRED' }, 'expired: refused on the same kept-alive connection')
  t.same(await get(g.url, resume), { status: 401, keptAlive: false, resumed: true, code: 'AOG_IDENTITY_REQUIRED' }, 'expired: refused on a resumed session')
  const fresh = createAgent({ url: g.url, ...files })
  t.teardown(() => fresh.close())
  t.match(await outcome(getChallenge(fresh)), /^transport/, 'a full handshake is refused by the TLS stack itself')
  t.equal(await outcome(getChallenge(g.agent())), 'accepted', 'other agents are unaffected')
  t.match(g.logs.join(''), /outside its validity dates/, 'the refusal is logged with its reason')
})
