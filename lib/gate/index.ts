/**
 * createGate: the gate listener (node:https, hand-routed), the operations listener and their
 * lifecycle, wired from a frozen config and injected parts. No module-level mutable state: tests
 * build as many gates as they like, each with its own store, pool, logger and registry.
 *   listener.ts  the listener, its TLS material and hardening
 *   identity.ts  the identity step and the files it reloads
 *   pipeline.ts  context, routing, the one error path, booking
 *   ops.ts       /metrics, /healthz, /readyz
 */
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ConfigError, type Config } from '../config.js'
import type { Logger } from '../log.js'
import { setBuildInfo, type Metrics } from '../metrics.js'
import { parseHostPort } from '../host-port.js'
import { Router } from '../http/router.js'
import { readCertificates } from '../identity/forwarded.js'
import { RandomPool } from '../random.js'
import { createStore } from '../stores/index.js'
import type { Store } from '../stores/store.js'
import { VerifyPool } from '../verification/pool.js'
import { createAttestationVerifier, readJwksCa } from '../attestation.js'
import { chainKernel } from '../chain/native.js'
import { getChallenge } from '../handlers/challenge.js'
import { postTask } from '../handlers/task.js'
import type { GateParts, Handler } from '../handlers/context.js'
import { createListener } from './listener.js'
import { createIdentityStep } from './identity.js'
import { createPipeline } from './pipeline.js'
import { createOpsServer } from './ops.js'
import { getOpenApi, OPENAPI_PATH } from '../openapi.js'
import { createAssertionSigner, loadAssertionKeys } from '../assertion.js'
import { Upstream } from '../upstream.js'
import { AUTH_PATH, AUTH_PREFIX, UPSTREAM_ROUTE, getAuth, proxyRequest } from '../handlers/access.js'

export interface GateDeps {
  logger: Logger
  metrics: Metrics
  /** Defaults to the store named by config.store (createStore). */
  store?: Store
  /** Clock for the default memory store and the forwarded signature check (tests pass a fake one). */
  now?: () => number
  /** Poll interval for CRL, deny-list and secret file changes (ms; default 1000). */
  watchMs?: number
}

export interface GateAddresses {
  gate: AddressInfo
  ops: AddressInfo
}

export interface Gate {
  readonly store: Store
  readonly pool: VerifyPool
  /** Start both listeners; resolves with their bound addresses (port 0 picks a free port). */
  listen (): Promise<GateAddresses>
  /**
   * Drain for drainDelayMs (/readyz 503, responses ask to close, still serving), stop accepting,
   * finish in-flight requests (up to shutdownTimeoutMs), then release everything.
   */
  close (): Promise<void>
  /** Requests being handled right now. */
  readonly inflight: number
  /**
   * SIGHUP: re-read the server certificate and key, the client CA bundle, the CRL, the deny list
   * and the forward secrets, and apply `logLevel` (the config file's, re-read by bin/). Each failed
   * part keeps its previous material and is logged; aog_reloads_total{what,result} counts them.
   */
  reload (opts?: { logLevel?: string }): void
}

/** Build the gate. Reads the TLS files named by config (bin/ resolves --dev paths first). */
export function createGate (config: Readonly<Config>, deps: GateDeps): Gate {
  const { logger, metrics } = deps
  if (config.clientCa === undefined) throw new Error('clientCa is required')
  const clientCa = readFileSync(config.clientCa)
  const cas = readCertificates(clientCa)
  if (cas.length === 0) throw new Error(`no certificate in ${config.clientCa}`)

  const store = deps.store ?? createStore(config, logger, deps.now, metrics)
  const pool = new VerifyPool({
    size: config.workers,
    maxQueue: config.maxQueue,
    taskTimeoutMs: config.taskTimeoutMs,
    implementation: config.chain,
    onStats: (s) => {
      metrics.poolQueueDepth.set(s.queued)
      metrics.poolUtilization.set(s.size === 0 ? 0 : s.busy / s.size)
      metrics.poolWorkers.set(s.size)
    },
    onWorkerError: (err) => logger.error({ err }, 'verification worker replaced'),
  })
  const attest = createAttestationVerifier({
    jwksFile: config.attestationJwks,
    jwksUrls: config.attestationJwksUrl?.split(','),
    jwksCa: readJwksCa(config.attestationJwksCa),
    jwksTimeoutMs: config.attestationJwksTimeoutMs,
    jwksMaxBytes: config.attestationJwksMaxBytes,
    jwksRefreshMs: config.attestationJwksRefreshSeconds * 1000,
    jwksCooldownMs: config.attestationJwksCooldownSeconds * 1000,
    jwksMaxStaleMs: config.attestationJwksMaxStaleSeconds * 1000,
    issuer: config.attestationIssuer,
    audience: config.attestationAudience,
    policyFile: config.attestationPolicy,
    required: config.requireAttestation,
    metrics,
    logger,
  })
  const assertion = config.assertionKey === undefined
    ? undefined
    : createAssertionSigner({
      keys: loadAssertionKeys(config.assertionKey.split(',').map((f) => f.trim()).filter((f) => f !== '')),
      issuer: config.assertionIssuer,
      audience: config.assertionAudience ?? (config.upstream === undefined ? 'aog-upstream' : new URL(config.upstream).origin),
      ttlSeconds: config.assertionTtlSeconds,
      ...(deps.now === undefined ? {} : { now: deps.now }),
    })
  const upstream = config.upstream === undefined
    ? undefined
    : new Upstream({
      url: config.upstream,
      ca: config.upstreamCa === undefined ? undefined : readFileSync(config.upstreamCa),
      maxBodyBytes: config.upstreamMaxBodyBytes,
      timeoutMs: config.upstreamTimeoutMs,
      connections: config.upstreamConnections,
      maxPerIdentity: config.upstreamMaxPerIdentity,
    })
  const parts: GateParts = { config, store, pool, metrics, attest, random: new RandomPool(), assertion, upstream }
  const router = new Router<Handler>().add('GET', '/challenge', getChallenge).add('POST', '/task', postTask).add('GET', OPENAPI_PATH, getOpenApi)
  // GET /auth needs a key to sign X-AOG-Agent with; the proxy, an upstream (docs/protocol.md section 7).
  if (assertion !== undefined) router.add('GET', AUTH_PATH, getAuth).under(AUTH_PREFIX, AUTH_PATH, getAuth)
  if (upstream !== undefined) router.otherwise(UPSTREAM_ROUTE, proxyRequest)
  const poolTimer = upstream === undefined
    ? undefined
    : setInterval(() => {
      for (const [state, n] of Object.entries(upstream.stats())) metrics.upstreamPool.set({ state }, n)
    }, 1000).unref()

  const listener = createListener(config, clientCa, logger, metrics, { watchMs: deps.watchMs ?? 1000 })
  // Created after the listener: its first CRL load goes to the TLS context before listen().
  const identity = createIdentityStep({
    config,
    cas,
    logger,
    metrics,
    watchMs: deps.watchMs ?? 1000,
    now: deps.now,
    onCrl: (pems) => { listener.setCrls(pems) },
    onClientCa: (ca) => { listener.setClientCa(ca) },
  })
  const pipeline = createPipeline({ config, logger, metrics, parts, router, identify: identity.identify, idPrefix: randomBytes(3).toString('hex') })
  listener.server.on('request', pipeline.handle)
  listener.server.on('checkExpectation', pipeline.expectationFailed)
  listener.server.on('connect', pipeline.connect)
  let closing = false
  const ops = createOpsServer({
    logger,
    metrics,
    store,
    pool,
    crlStatus: identity.crlStatus,
    crlGraceSeconds: config.crlGraceSeconds,
    livenessStoreDownSeconds: config.livenessStoreDownSeconds,
    closing: () => closing,
    ...(assertion === undefined ? {} : { jwks: assertion.jwks }),
  })

  return {
    store,
    pool,
    get inflight () { return pipeline.inflight },
    reload (opts = {}) {
      listener.reloadTls()
      identity.reload()
      if (opts.logLevel !== undefined) setLogLevel(logger, metrics, opts.logLevel)
    },
    async listen () {
      const implementation = await pool.ready()
      metrics.chainImplementation.set({ implementation, kernel: chainKernel(implementation) }, 1)
      setBuildInfo(metrics, implementation)
      const gate = await listenOn(listener.server, config.listen, 'listen')
      return { gate, ops: await listenOn(ops, config.opsListen, 'opsListen') }
    },
    async close () {
      if (closing) return
      closing = true
      // The drain: /readyz answers 503 and every response asks its client to close, while the gate
      // still serves; idle connections are left for the proxy to close (closing them here races its next request).
      pipeline.startClosing()
      if (config.drainDelayMs > 0) {
        logger.info({ drainDelayMs: config.drainDelayMs }, 'draining: /readyz answers 503, still serving')
        await new Promise((resolve) => setTimeout(resolve, config.drainDelayMs))
      }
      const stopped = new Promise<void>((resolve) => listener.server.close(() => resolve()))
      listener.server.closeIdleConnections()
      let timer: NodeJS.Timeout | undefined
      await Promise.race([pipeline.drained(), new Promise<void>((resolve) => { timer = setTimeout(resolve, config.shutdownTimeoutMs) })])
      clearTimeout(timer)
      listener.server.closeAllConnections()
      listener.destroyAll()
      await stopped
      await new Promise<void>((resolve) => ops.close(() => resolve()))
      ops.closeAllConnections()
      identity.close()
      listener.close()
      clearInterval(poolTimer)
      await upstream?.close()
      await attest.close()
      await pool.close()
      await store.close()
    },
  }
}

/** A reloaded log level; an unknown one keeps the current level (logged, counted failed). */
function setLogLevel (logger: Logger, metrics: Metrics, level: string): void {
  if (level === logger.level) return
  if (!(level in logger.levels.values) && level !== 'silent') {
    metrics.reloads.inc({ what: 'log_level', result: 'failed' })
    logger.error({ logLevel: level }, 'log level reload failed: unknown level; keeping the current one')
    return
  }
  const previous = logger.level
  // Said at info under whichever of the two levels is more verbose, so that it shows under either.
  const louder = level !== 'silent' && logger.levels.values[level]! < logger.levelVal
  if (!louder) logger.info({ logLevel: level, previous }, 'log level reloaded')
  logger.level = level
  if (louder) logger.info({ logLevel: level, previous }, 'log level reloaded')
  metrics.reloads.inc({ what: 'log_level', result: 'ok' })
}

/** Listen on HOST:PORT; an address in use or not ours is a configuration error naming `field`. */
function listenOn (s: Server, hostPort: string, field: string): Promise<AddressInfo> {
  const { host, port } = parseHostPort(hostPort)
  return new Promise((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException): void => {
      const why = LISTEN_ERRORS[err.code ?? '']
      reject(why === undefined ? err : new ConfigError([{ field, message: `${hostPort}: ${why} (${String(err.code)})` }]))
    }
    s.once('error', fail)
    s.listen(port, host, () => {
      s.off('error', fail)
      resolve(s.address() as AddressInfo)
    })
  })
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use',
  EADDRNOTAVAIL: 'the address is not one of this host\'s',
  EACCES: 'this process may not listen on the port',
}
