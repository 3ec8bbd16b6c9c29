/**
 * The operations listener (docs/protocol.md section 6): plain HTTP, no client certificate, meant
 * for loopback or a private interface. /metrics, /healthz (the process is alive), /readyz (store
 * reachable, verification pool up, CRL usable, not shutting down), /.well-known/jwks.json (the
 * public keys of X-AOG-Agent, section 7, when the gate signs assertions).
 */
import { createServer, type Server } from 'node:http'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { Store } from '../stores/store.js'
import type { VerifyPool } from '../verification/pool.js'
import type { CrlStatus } from '../identity/revocation.js'

export interface OpsOptions {
  logger: Logger
  metrics: Metrics
  store: Store
  pool: VerifyPool
  crlStatus: () => CrlStatus | undefined
  crlGraceSeconds: number
  closing: () => boolean
  /** The JWKS of the X-AOG-Agent signer; without it /.well-known/jwks.json is 404. */
  jwks?: (() => object) | undefined
}

export function createOpsServer (o: OpsOptions): Server {
  // Short timeouts: a handful of idle or slow sockets must not keep probes and scrapes out for long.
  const server = createServer({ headersTimeout: 5000, requestTimeout: 10_000, keepAliveTimeout: 5000, connectionsCheckingInterval: 500 }, async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n')
      } else if (path === '/metrics') {
        const text = await o.metrics.registry.metrics()
        res.writeHead(200, { 'content-type': o.metrics.registry.contentType }).end(text)
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}\n')
      } else if (path === '/readyz') {
        const { ready, body } = await readiness(o)
        res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n')
      } else if (path === '/.well-known/jwks.json' && o.jwks !== undefined) {
        // Verifiers may cache it this long: a rotation lists the new key second for that long before it signs.
        res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=300' }).end(JSON.stringify(o.jwks()) + '\n')
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      }
    } catch (err) {
      o.logger.error({ err }, 'ops listener error')
      if (!res.headersSent) res.writeHead(503).end()
    }
  })
  // Its connections come out of the headroom connectionBound keeps.
  server.maxConnections = 64
  return server
}

async function readiness (o: OpsOptions): Promise<{ ready: boolean, body: Record<string, unknown> }> {
  const problems: string[] = []
  try { await o.store.ping() } catch { problems.push('store unreachable') }
  if (!o.pool.up) problems.push('verification pool down')
  if (o.closing()) problems.push('shutting down')
  // With --crl: its state, and not ready once it is past nextUpdate for longer than the grace.
  const c = o.crlStatus()
  if (c !== undefined && !c.ready) problems.push(`CRL past its nextUpdate for more than ${o.crlGraceSeconds} s`)
  const crl = c === undefined ? {} : { crl: { nextUpdate: c.nextUpdate === undefined ? null : new Date(c.nextUpdate).toISOString(), stale: c.stale, handshake: c.handshake } }
  return problems.length === 0
    ? { ready: true, body: { status: 'ready', ...crl } }
    : { ready: false, body: { status: 'unready', problems, ...crl } }
}
