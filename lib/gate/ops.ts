/**
 * The operations listener (docs/protocol.md section 6): plain HTTP, no client certificate, meant
 * for loopback or a private interface. /metrics, /healthz (liveness: 503 only when the gate cannot
 * recover by itself, i.e. the store has been unusable for livenessStoreDownSeconds even after its
 * client was replaced), /readyz (store usable now, verification pool up, CRL usable, not shutting
 * down), /.well-known/jwks.json (the public keys of X-AOG-Agent, section 7, when the gate signs
 * assertions).
 */
import { createServer, type Server } from 'node:http'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { STORE_STATES, type Store, type StoreState } from '../stores/store.js'
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
  /** /healthz is 503 once the store has been unusable this long (and its client replaced); default 60. */
  livenessStoreDownSeconds?: number | undefined
}

/** A probe waits this long for the store's PING at most (the probe's own timeout is ~1 s or more). */
const PING_TIMEOUT_MS = 800

export function createOpsServer (o: OpsOptions): Server {
  const store = storeProbe(o)
  // Short timeouts: a handful of idle or slow sockets must not keep probes and scrapes out for long.
  const server = createServer({ headersTimeout: 5000, requestTimeout: 10_000, keepAliveTimeout: 5000, connectionsCheckingInterval: 500 }, async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n')
      } else if (path === '/metrics') {
        store.state()
        const text = await o.metrics.registry.metrics()
        res.writeHead(200, { 'content-type': o.metrics.registry.contentType }).end(text)
      } else if (path === '/healthz') {
        const problem = await store.liveness()
        if (problem === undefined) res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}\n')
        else res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'unhealthy', problems: [problem] }) + '\n')
      } else if (path === '/readyz') {
        const { ready, body } = await readiness(o, store)
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

async function readiness (o: OpsOptions, store: StoreProbe): Promise<{ ready: boolean, body: Record<string, unknown> }> {
  const problems: string[] = []
  if (!await store.usable()) problems.push('store unreachable')
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

interface StoreProbe {
  /** Usable now: its state is ready (when it reports one) and it answers a PING in time. */
  usable: () => Promise<boolean>
  /** Why the gate cannot recover by itself, or undefined (then /healthz is 200). */
  liveness: () => Promise<string | undefined>
  /** The current state, also set on aog_store_connection_state. */
  state: () => StoreState
}

/**
 * The store as the probes see it. A store that reports its health (memory, Redis) is read without
 * a round trip when it is not ready; for one that does not, failed PINGs mark it down.
 */
function storeProbe (o: OpsOptions): StoreProbe {
  let pingDownSince: number | undefined
  const state = (): StoreState => {
    const s = o.store.health?.().state ?? (pingDownSince === undefined ? 'ready' : 'down')
    for (const x of STORE_STATES) o.metrics.storeState.set({ state: x }, x === s ? 1 : 0)
    return s
  }
  const ping = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([o.store.ping(), new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error('ping timed out')), PING_TIMEOUT_MS) })])
      pingDownSince = undefined
      return true
    } catch {
      pingDownSince ??= Date.now()
      return false
    } finally {
      clearTimeout(timer)
    }
  }
  state()
  return {
    state,
    async usable () { return state() === 'ready' && await ping() },
    async liveness () {
      const h = o.store.health?.()
      if (h === undefined) await ping()
      const since = h === undefined ? pingDownSince : h.downSince
      const limit = (o.livenessStoreDownSeconds ?? 60) * 1000
      if (since === undefined || Date.now() - since < limit) return undefined
      // A client replacement may still heal it: not before one was tried.
      if (h?.replacements === 0) return undefined
      const after = h?.replacements === undefined ? '' : ` after ${h.replacements} client replacement${h.replacements === 1 ? '' : 's'}`
      return `store unusable for ${Math.floor((Date.now() - since) / 1000)} s${after}`
    },
  }
}
