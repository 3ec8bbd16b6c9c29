/**
 * The gate's listener and its TLS material: node:https with the agents' mTLS (direct mode), plain
 * HTTP or HTTPS requiring the proxy's certificate (forwarded mode), hardened against connections
 * that never become requests, with a secure context that can be replaced (new CRLs) at run time.
 */
import { createServer as createHttpsServer, type Server as HttpsServer, type ServerOptions as HttpsOptions } from 'node:https'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { AogError } from '../errors.js'
import { rawProblemResponse } from '../http/reply.js'

/** Cipher suites: AEAD with forward secrecy only (no CBC, no SHA-1 MAC, no static RSA). */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

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

export interface Listener {
  readonly server: HttpServer | HttpsServer
  /** Replace the TLS context's CRLs (PEM; undefined: none), keeping its ticket keys. No-op without TLS. */
  setCrls (pems: string[] | undefined): void
  /** Destroy every open socket, handshakes included (node only tracks HTTP connections). */
  destroyAll (): void
}

/** Build the listener named by config; reads the TLS files (bin/ resolves --dev paths first). */
export function createListener (config: Readonly<Config>, clientCa: Buffer, logger: Logger, metrics: Metrics): Listener {
  const forwarded = config.mode === 'forwarded'
  const common = {
    maxHeaderSize: 8192,
    // A request without Host is answered by the gate (problem+json), not by node's bare 400.
    requireHostHeader: false,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // Node checks the headers and request timeouts on this period (30 s by default, which let a
    // 10 s headers timeout run to 40 s): a tenth of the shorter one, within 100 ms and 1 s.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(config.headersTimeoutMs, config.requestTimeoutMs) / 10))),
  }
  const tlsBase = tlsOptions(config, clientCa, forwarded)
  const server: HttpServer | HttpsServer = tlsBase === undefined ? createHttpServer(common) : createHttpsServer({ ...tlsBase, ...common })
  harden(server, config, logger, metrics)
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  return {
    server,
    setCrls (pems) {
      if (tlsBase === undefined || !('setSecureContext' in server)) return
      // The ticket keys are kept so that resumed sessions still resume (and then meet the per-request checks).
      server.setSecureContext({ ...tlsBase, ...(pems === undefined ? {} : { crl: pems }), ticketKeys: server.getTicketKeys() })
    },
    destroyAll () {
      for (const socket of sockets) socket.destroy()
    },
  }
}

/**
 * Direct mode: the agents' mTLS. Forwarded mode: HTTPS requiring the proxy's certificate
 * (--forward-proxy-ca), or plain HTTP (undefined). TLS 1.2 and up, AEAD suites, the server's order.
 */
function tlsOptions (config: Readonly<Config>, clientCa: Buffer, forwarded: boolean): HttpsOptions | undefined {
  if (forwarded && config.forwardProxyCa === undefined) return undefined
  if (config.tlsCert === undefined || config.tlsKey === undefined) throw new Error('tlsCert and tlsKey are required')
  return {
    cert: readFileSync(config.tlsCert),
    key: readFileSync(config.tlsKey),
    ca: forwarded ? readFileSync(config.forwardProxyCa!) : clientCa,
    requestCert: true,
    // --web-bot-auth (direct mode): peers without a verified certificate get in, to sign their
    // requests; the identity step refuses any that presented a certificate that failed.
    rejectUnauthorized: forwarded || !config.webBotAuth,
    minVersion: 'TLSv1.2',
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    handshakeTimeout: config.handshakeTimeoutMs,
  }
}

/** Connections that never become requests: refused handshakes, malformed requests, floods, renegotiation. */
function harden (server: HttpServer | HttpsServer, config: Readonly<Config>, logger: Logger, metrics: Metrics): void {
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
  server.maxConnections = connectionBound(config.maxConnections)
  let dropped = 0
  let droppedLogged = 0
  server.on('drop', () => {
    metrics.connectionsDropped.inc()
    dropped++
    const now = Date.now()
    if (now - droppedLogged < 10_000) return
    logger.warn({ maxConnections: server.maxConnections, dropped }, 'connection bound reached: new connections closed')
    droppedLogged = now
    dropped = 0
  })
}
