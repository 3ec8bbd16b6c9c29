/**
 * createGate: builds the gate listener (node:https, hand-routed), the operations listener and
 * their lifecycle from a frozen config and injected parts. No module-level mutable state: tests
 * build as many gates as they like, each with its own store, pool, logger and registry.
 */
import { createServer as createHttpsServer, type Server as HttpsServer, type ServerOptions as HttpsOptions } from 'node:https'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
// The module's binding, not the global: globalThis.performance is a lazy accessor, a getter call per use.
import { performance } from 'node:perf_hooks'
import type { TLSSocket } from 'node:tls'
import { RandomPool } from './random.js'
import { RequestIds } from './request-id.js'
import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import type { Config } from './config.js'
import type { Logger } from './log.js'
import type { Metrics } from './metrics.js'
import type { Observer } from './histogram.js'
import { AogError, PoolBusyError, StoreUnavailableError } from './errors.js'
import { Router } from './http/router.js'
import { problemHeaders, problemJson, rawProblemResponse } from './http/reply.js'
import { ResponseBatch } from './http/batch.js'
import { tlsIdentity, type Identity } from './identity/tls.js'
import { forwardedIdentity, readCertificates } from './identity/forwarded.js'
import { Revocation } from './identity/revocation.js'
import type { OnceKey } from './stores/store.js'
import { createStore } from './stores/index.js'
import type { Store } from './stores/store.js'
import { VerifyPool } from './verification/pool.js'
import { createAttestationVerifier } from './attestation.js'
import { chainKernel } from './chain/native.js'
import { getChallenge } from './handlers/challenge.js'
import { postTask } from './handlers/task.js'
import { keepTickShape } from './tick-shape.js'
import type { GateParts, Handler, RequestContext } from './handlers/context.js'

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
  /** Stop accepting, finish in-flight requests (up to shutdownTimeoutMs), then release everything. */
  close (): Promise<void>
  /** Requests being handled right now. */
  readonly inflight: number
  /** Re-read the CRL, the deny list and the forward secrets (SIGHUP). */
  reload (): void
}

/** One secret per line (blank lines and # comments ignored); every line is accepted. */
export function readSecrets (file: string): Buffer[] {
  const secrets = readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  if (secrets.length === 0) throw new Error(`no secret in ${file}`)
  for (const s of secrets) if (s.length < 16) throw new Error(`a secret in ${file} is shorter than 16 characters`)
  return secrets.map((s) => Buffer.from(s, 'utf8'))
}

/**
 * The per-request context. A class, not an object literal with a `get log()` closure: V8 moved
 * such literals to the old generation early (allocation-site pretenuring), and an old-space
 * context keeps its request and response alive through every young-generation collection, so
 * each request's objects were copied and promoted (3.4 KB per GET /challenge, 7 us of GC).
 */
class Context implements RequestContext {
  route = 'unmatched'
  identity = undefined as unknown as Identity
  once: OnceKey | undefined = undefined
  outcome = 'unknown'
  // The answer, kept here until the batch writes it (no object of its own per response).
  status = 0
  headers: string[] = EMPTY_LIST
  body = ''
  answered = false
  /** done() has run: the request is counted, observed and logged (exactly once). */
  booked = false
  #child: Logger | undefined
  readonly #logger: Logger
  readonly #batch: ResponseBatch<Context>

  constructor (readonly reqId: string, readonly req: IncomingMessage, readonly res: ServerResponse, readonly start: number, logger: Logger, batch: ResponseBatch<Context>) {
    this.#logger = logger
    this.#batch = batch
  }

  send (status: number, headers: string[], body: string): void {
    this.status = status
    this.headers = headers
    this.body = body
    this.answered = true
    this.#batch.add(this)
  }

  /** A child logger with the request id, made only when a handler logs something of its own. */
  get log (): Logger { return (this.#child ??= this.#logger.child({ reqId: this.reqId })) }
}

const EMPTY_LIST: string[] = []

/** The request declares a body: chunked, or a Content-Length other than 0. */
function declaresBody (req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/** The request's body is chunked or declared longer than `max` (draining it has no bound). */
function unboundedBody (req: IncomingMessage, max: number): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) > max)
}

/** Split "host:port" or "[v6]:port". */
export function parseHostPort (s: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s)
  if (m === null) throw new Error(`not HOST:PORT: ${s}`)
  return { host: m[1] ?? m[2]!, port: Number(m[3]) }
}

/** The soft open-file limit (RLIMIT_NOFILE) from /proc/self/limits; undefined where unreadable. */
export function openFileLimit (): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return m === null ? undefined : Number(m[1])
  } catch {
    return undefined
  }
}

/**
 * The gate listener's bound on open connections: `configured`, or (0) the open-file limit less an
 * eighth of it, at least 128 descriptors kept for the store, the files and the ops listener, so that
 * stalled handshakes cannot take every descriptor. An unknown limit counts as 1024.
 */
export function connectionBound (configured: number, limit: number = openFileLimit() ?? 1024): number {
  if (configured > 0) return configured
  return Math.max(16, limit - Math.max(128, Math.floor(limit / 8)))
}

/** Cipher suites: AEAD with forward secrecy only (no CBC, no SHA-1 MAC, no static RSA). */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** Build the gate. Reads the TLS files named by config (bin/ resolves --dev paths first). */
export function createGate (config: Readonly<Config>, deps: GateDeps): Gate {
  const { logger, metrics } = deps
  // Keep nextTick's queue-entry maps alive: a gate that idled before its traffic (readiness probes,
  // then load) otherwise spent 5-7% of its CPU defining them in V8's runtime (lib/tick-shape.ts).
  void keepTickShape()
  const random = new RandomPool()
  const store = deps.store ?? createStore(config, logger, deps.now)
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
    issuer: config.attestationIssuer,
    audience: config.attestationAudience,
    required: config.requireAttestation,
  })
  const parts: GateParts = { config, store, pool, metrics, attest, random, issued: metrics.issuedCount(store.kind), refuse: (ctx, err) => { fail(ctx, err) } }
  const router = new Router<Handler>().add('GET', '/challenge', getChallenge).add('POST', '/task', postTask)

  if (config.clientCa === undefined) throw new Error('clientCa is required')
  const forwarded = config.mode === 'forwarded'
  const clientCa = readFileSync(config.clientCa)
  const cas = readCertificates(clientCa)
  if (cas.length === 0) throw new Error(`no certificate in ${config.clientCa}`)
  const common = {
    maxHeaderSize: 8192,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // Node checks the headers and request timeouts on this period (30 s by default, which let a
    // 10 s headers timeout run to 40 s): a tenth of the shorter one, within 100 ms and 1 s.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(config.headersTimeoutMs, config.requestTimeoutMs) / 10))),
  }
  const tlsFiles = (): Pick<HttpsOptions, 'cert' | 'key'> => {
    if (config.tlsCert === undefined || config.tlsKey === undefined) throw new Error('tlsCert and tlsKey are required')
    return { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) }
  }
  // Direct mode: agents' mTLS. Forwarded mode: plain HTTP from the proxy, or HTTPS requiring the
  // proxy's own certificate (--forward-proxy-ca).
  // Both: TLS 1.2 and up, AEAD suites only, the server's order (renegotiation is refused per connection below).
  const tlsPolicy = { minVersion: 'TLSv1.2', ciphers: TLS_CIPHERS, honorCipherOrder: true, handshakeTimeout: config.handshakeTimeoutMs } as const
  const tlsBase: HttpsOptions | undefined = !forwarded
    ? { ...tlsFiles(), ca: clientCa, requestCert: true, rejectUnauthorized: true, ...tlsPolicy }
    : config.forwardProxyCa !== undefined
      ? { ...tlsFiles(), ca: readFileSync(config.forwardProxyCa), requestCert: true, rejectUnauthorized: true, ...tlsPolicy }
      : undefined
  const server: HttpServer | HttpsServer = tlsBase === undefined
    ? createHttpServer(common)
    : createHttpsServer({ ...tlsBase, ...common }) // the CRL comes from the Revocation's first load (onCrl below)

  const revocation = new Revocation({
    crlFile: config.crl,
    denyFile: config.denyFile,
    cas,
    logger,
    pollMs: deps.watchMs ?? 1000,
    graceSeconds: config.crlGraceSeconds,
    metrics,
    // One loader for both uses: the TLS context gets the CRLs (PEM) the per-request list comes from,
    // or none while they are outside their update times; a throw here refuses the whole reload. The
    // ticket keys are kept so that resumed sessions still resume (and then meet the per-request check).
    // Forwarded mode has no agent handshake here (the proxy checks its own CRL).
    ...(forwarded
      ? {}
      : {
          onCrl: (pems: string[] | undefined) => {
            if (tlsBase !== undefined && 'setSecureContext' in server) {
              server.setSecureContext({ ...tlsBase, ...(pems === undefined ? {} : { crl: pems }), ticketKeys: server.getTicketKeys() })
            }
          },
        }),
  })
  let secrets = forwarded && config.forwardSecretFile !== undefined ? readSecrets(config.forwardSecretFile) : []
  const reloadSecrets = (): void => {
    if (!forwarded || config.forwardSecretFile === undefined) return
    try {
      secrets = readSecrets(config.forwardSecretFile)
      logger.info({ secrets: secrets.length }, 'forward secrets reloaded')
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'forward secret reload failed; keeping the previous ones')
    }
  }
  if (forwarded && config.forwardSecretFile !== undefined && (deps.watchMs ?? 1000) > 0) {
    watchFile(config.forwardSecretFile, { interval: deps.watchMs ?? 1000, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size) reloadSecrets()
    })
  }
  const onceTtlMs = 2 * config.forwardSkewSeconds * 1000

  /** The identity step: who is calling, revocation, and (forwarded) the single-use request id. */
  function identify (ctx: Context): void {
    const req = ctx.req
    if (!forwarded) {
      const identity = tlsIdentity(req.socket as TLSSocket)
      revocation.check(identity)
      ctx.identity = identity
      return
    }
    const r = forwardedIdentity(req.method ?? '', req.url ?? '', req.headers, {
      secrets,
      skewSeconds: config.forwardSkewSeconds,
      cas,
      ...(deps.now === undefined ? {} : { now: deps.now }),
    })
    revocation.check(r.identity)
    ctx.identity = r.identity
    ctx.once = { id: r.rid, ttlMs: onceTtlMs }
  }

  let inflight = 0
  let closing = false
  let drained: (() => void) | undefined

  // Refused handshakes (HTTPS listeners only; a plain forwarded listener has none).
  server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
    metrics.identityFailures.inc({ reason: 'tls_handshake' })
    logger.debug({ code: err.code }, 'TLS handshake refused')
  })
  // An error before a request could be read (TLS handshake or its timeout, reset, renegotiation):
  // the socket is destroyed, nothing is written into a connection that may be half a handshake.
  // A malformed request or a headers/request timeout gets a problem+json answer first, unless a
  // response has started on the connection.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const code = err.code ?? ''
    const timeout = code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT'
    const started = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage?.headersSent === true
    if ((!timeout && !code.startsWith('HPE_')) || !socket.writable || started) { socket.destroy(); return }
    const detail = code === 'HPE_HEADER_OVERFLOW' ? 'request headers exceed 8 KiB' : timeout ? 'request timed out' : 'malformed HTTP request'
    socket.end(rawProblemResponse(new AogError('AOG_BAD_REQUEST', detail), timeout ? 408 : 400))
    // A peer that reads nothing or never closes its side does not keep the socket past a second.
    setTimeout(() => socket.destroy(), 1000).unref()
  })
  // Client-initiated renegotiation (TLS 1.2) is refused: the attempt is an error that closes the connection.
  server.on('secureConnection', (socket: TLSSocket) => { socket.disableRenegotiation() })
  // Every open connection, handshakes included, bounded (stalled ones cannot take every descriptor)
  // and known to close(), which must not wait for a handshake that will never finish.
  const sockets = new Set<Socket>()
  server.maxConnections = connectionBound(config.maxConnections)
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  let dropped = 0
  let droppedLogged = 0
  server.on('drop', () => {
    dropped++
    const now = Date.now()
    if (now - droppedLogged < 10_000) return
    logger.warn({ maxConnections: server.maxConnections, dropped }, 'connection bound reached: new connections closed')
    droppedLogged = now
    dropped = 0
  })

  server.on('request', handle)
  // An Expect other than 100-continue: node would write a bare 417; the gate answers it as
  // problem+json like any refusal, and closes the connection (a body, if any, is not read).
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const ctx = new Context(reqIds.next(), req, res, performance.now(), logger, batch)
    inflight++
    res.shouldKeepAlive = false
    const e = new AogError('AOG_BAD_REQUEST', 'only Expect: 100-continue is supported')
    ctx.outcome = e.code
    const text = problemJson(e, undefined, 417)
    ctx.send(417, problemHeaders(e, text), text)
  })

  // Request ids: a random per-process prefix and a counter (16 hex digits).
  const reqIds = new RequestIds(random.hex(3))
  const logRequest = (line: Record<string, unknown>): void => { logger.info(line, 'request') }
  // The FastHistogram series of the last (route, method, status) is kept aside: under load most
  // requests repeat it, and then no label object is built or looked up.
  let last = { route: '', method: '', status: 0, series: undefined as Observer | undefined }
  function observeDuration (route: string, method: string, status: number, seconds: number): void {
    let series = last.series
    if (series === undefined || route !== last.route || method !== last.method || status !== last.status) {
      series = metrics.requestDuration.labels({ route, method, status: String(status) })
      last = { route, method, status, series }
    }
    series.observe(seconds)
  }

  // The logged fingerprint prefix of the last identity: the same string for its next requests
  // (a fresh slice per request made the request line compare 16 characters each time).
  let lastFingerprint: string | undefined
  let lastFp: string | undefined
  /**
   * The end of every request, once: the in-flight count, the duration histogram and the log line.
   * For an answered request it runs when the batch has written the answer (so the duration is
   * the time until the response went to the socket), or when the response closes first.
   */
  function done (ctx: Context, at: number = performance.now()): void {
    if (ctx.booked) return
    ctx.booked = true
    inflight--
    const { req, res } = ctx
    const ms = at - ctx.start
    const method = req.method ?? ''
    const fingerprint = ctx.identity?.fingerprint
    if (fingerprint !== lastFingerprint) {
      lastFingerprint = fingerprint
      lastFp = fingerprint?.slice(0, 16)
    }
    observeDuration(ctx.route, method, res.statusCode, ms / 1000)
    logRequest({
      reqId: ctx.reqId,
      fp: lastFp,
      method,
      route: ctx.route,
      status: res.statusCode,
      durationMs: Math.round(ms * 100) / 100,
      outcome: ctx.outcome,
    })
    if (inflight === 0) drained?.()
  }

  // Every answer goes through one batch per gate: written at the end of the event-loop turn
  // that finished it, then booked (lib/http/batch.ts).
  const batch = new ResponseBatch<Context>((ctx, err, at) => {
    if (err !== undefined) ctx.log.error({ err }, 'writing the response failed')
    done(ctx, at)
  })

  // Not async: a handler that finishes synchronously (GET /challenge on the memory store) costs
  // no promise, and its request is booked by the batch that writes its answer (no 'close'
  // listener, no closure). One that returns a promise is booked when its answer is written or
  // its response closes, whichever comes first; its rejection goes to fail() like a throw.
  function handle (req: IncomingMessage, res: ServerResponse): void {
    const ctx = new Context(reqIds.next(), req, res, performance.now(), logger, batch)
    inflight++
    if (closing) res.setHeader('connection', 'close')
    // Only POST reads a body: any other request that declares one is answered and its connection
    // closed, so the body is not read (node would drain it, whatever its length, to keep the connection).
    if (req.method !== 'POST' && declaresBody(req)) res.shouldKeepAlive = false
    let pending: Promise<void> | void | undefined
    try {
      identify(ctx)
      pending = router.find(req.method ?? '', req.url ?? '/', ctx)(ctx, parts)
    } catch (err) {
      fail(ctx, err)
    }
    if (pending === undefined && ctx.answered) return
    res.on('close', () => { done(ctx) })
    if (pending !== undefined) pending.catch((err: unknown) => { fail(ctx, err) })
  }

  function fail (ctx: RequestContext, err: unknown): void {
    // An error after the answer was given (or started): the connection is not left in doubt.
    if (ctx.answered || ctx.res.headersSent) {
      ctx.log.error({ err }, 'error after the response was sent')
      ctx.res.destroy()
      return
    }
    let e: AogError
    if (err instanceof AogError) {
      e = err
    } else if (err instanceof StoreUnavailableError) {
      metrics.storeErrors.inc({ op: ctx.route })
      ctx.log.warn({ err: err.message }, 'store unavailable')
      e = new AogError('AOG_UNAVAILABLE', 'the challenge store is unavailable; try again shortly', { retryAfter: 1 })
    } else if (err instanceof PoolBusyError) {
      ctx.log.warn({ reason: err.reason }, 'verification pool refused the task')
      e = err.reason === 'closed'
        ? new AogError('AOG_UNAVAILABLE', 'the gate is shutting down', { retryAfter: 1 })
        : new AogError('AOG_OVERLOADED', 'verification is overloaded; try again shortly', { retryAfter: 1 })
    } else {
      // A bug, not bad input: fail closed with 503, keep the cause in the log only.
      ctx.log.error({ err }, 'unexpected error')
      e = new AogError('AOG_UNAVAILABLE', 'internal error; try again shortly', { retryAfter: 1 })
    }
    if (e.code === 'AOG_IDENTITY_REQUIRED' || e.code === 'AOG_NOT_AUTHORIZED') {
      metrics.identityFailures.inc({ reason: e.code })
      ctx.log.info({ reason: e.detail }, 'identity refused')
    }
    if (e.code === 'AOG_RATE_LIMITED') metrics.rateLimited.inc({ route: ctx.route })
    if (ctx.route === '/task') metrics.submissions.inc({ outcome: 'rejected', reason: e.code })
    ctx.outcome = e.code
    // 413, or an unread body that is chunked or longer than the limit: the rest of the body is not
    // drained, so the connection cannot be reused.
    if (e.status === 413 || (!ctx.req.complete && unboundedBody(ctx.req, config.maxBodyBytes))) ctx.res.shouldKeepAlive = false
    const text = problemJson(e)
    ctx.send(e.status, problemHeaders(e, text), text)
  }

  const ops: HttpServer = createHttpServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n')
      } else if (path === '/metrics') {
        const text = await metrics.registry.metrics()
        res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text)
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}\n')
      } else if (path === '/readyz') {
        const problems: string[] = []
        try { await store.ping() } catch { problems.push('store unreachable') }
        if (!pool.up) problems.push('verification pool down')
        if (closing) problems.push('shutting down')
        // With --crl: its state, and not ready once it is past nextUpdate for longer than the grace.
        const c = revocation.crlStatus()
        if (c !== undefined && !c.ready) problems.push(`CRL past its nextUpdate for more than ${config.crlGraceSeconds} s`)
        const crl = c === undefined ? {} : { crl: { nextUpdate: c.nextUpdate === undefined ? null : new Date(c.nextUpdate).toISOString(), stale: c.stale, handshake: c.handshake } }
        res.writeHead(problems.length === 0 ? 200 : 503, { 'content-type': 'application/json' })
          .end(JSON.stringify(problems.length === 0 ? { status: 'ready', ...crl } : { status: 'unready', problems, ...crl }) + '\n')
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      }
    } catch (err) {
      logger.error({ err }, 'ops listener error')
      if (!res.headersSent) res.writeHead(503).end()
    }
  })

  // The ops listener's connections come out of the headroom connectionBound keeps.
  ops.maxConnections = 64

  function listenOn (s: HttpServer | HttpsServer, hostPort: string): Promise<AddressInfo> {
    const { host, port } = parseHostPort(hostPort)
    return new Promise((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, host, () => {
        s.off('error', reject)
        resolve(s.address() as AddressInfo)
      })
    })
  }

  return {
    store,
    pool,
    get inflight () { return inflight },
    reload () {
      revocation.reload()
      reloadSecrets()
    },
    async listen () {
      const implementation = await pool.ready()
      metrics.chainImplementation.set({ implementation, kernel: chainKernel(implementation) }, 1)
      const gate = await listenOn(server, config.listen)
      const opsAddr = await listenOn(ops, config.opsListen)
      return { gate, ops: opsAddr }
    },
    async close () {
      if (closing) return
      closing = true
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      if (inflight > 0) {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          new Promise<void>((resolve) => { drained = resolve }),
          new Promise<void>((resolve) => { timer = setTimeout(resolve, config.shutdownTimeoutMs) }),
        ])
        clearTimeout(timer)
      }
      server.closeAllConnections()
      // What node does not count as an HTTP connection: handshakes that have not finished.
      for (const socket of sockets) socket.destroy()
      await stopped
      await new Promise<void>((resolve) => ops.close(() => resolve()))
      ops.closeAllConnections()
      revocation.close()
      if (config.forwardSecretFile !== undefined) unwatchFile(config.forwardSecretFile)
      await pool.close()
      await store.close()
    },
  }
}
