/**
 * The request pipeline: a context per request, the identity step, routing, the handler, and one
 * error path (fail) that maps every refusal and failure to its problem+json answer. Each request
 * is booked once, when its response or its connection closes, whichever is first: the in-flight
 * count, the duration histogram and the request's log line.
 */
import { ServerResponse, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import { requestLineWriter, whoFields } from '../log-line.js'
import type { Metrics } from '../metrics.js'
import { AogError, PoolBusyError, StoreUnavailableError } from '../errors.js'
import { problemHeaders, problemJson } from '../http/reply.js'
import { malformed } from '../http/request.js'
import type { Router } from '../http/router.js'
import type { Identity } from '../identity/tls.js'
import { storeOpOf, type OnceKey } from '../stores/store.js'
import type { GateParts, Handler, RequestContext } from '../handlers/context.js'
import { AUTH_PATH, UPSTREAM_ROUTE, authRefusal } from '../handlers/access.js'
import { forwardedClientAddress, verifiedRequestId } from '../identity/forwarded.js'
import { IN_FLIGHT_LIMIT } from '../upstream.js'

/** The route of a request no route matched (a bounded metric label; the log line adds its path). */
const UNMATCHED = 'unmatched'
/** How much of an unmatched request's path its log line keeps. */
const PATH_LOG_CHARS = 64

class Context implements RequestContext {
  route = UNMATCHED
  identity = undefined as unknown as Identity
  once: OnceKey | undefined = undefined
  outcome = 'unknown'
  upstream: { status: number, ms: number } | undefined = undefined
  answered = false
  booked = false
  /** The TCP peer's address: the agent in direct mode, the proxy in forwarded mode. */
  readonly addr: string | undefined
  /** Forwarded mode: the agent's address as the proxy saw it (a vouched-for request only). */
  clientAddr: string | undefined = undefined
  /** A proxied request's handler, until it settles: its booking waits for it (see settle). */
  settling: Promise<void> | undefined = undefined
  #child: Logger | undefined

  /** `open`: the requests of its connection not booked yet, this one among them. */
  constructor (public reqId: string, readonly req: IncomingMessage, readonly res: ServerResponse, readonly start: number, private readonly logger: Logger, readonly open: Context[]) {
    this.addr = req.socket.remoteAddress
  }

  /** The one way out for an answer; adds X-Request-Id to `headers` (a list made for this answer). */
  send (status: number, headers: string[], body: string): void {
    this.answered = true
    headers.push('x-request-id', this.reqId)
    this.res.writeHead(status, headers).end(body)
  }

  /**
   * A child logger with the request's id, addresses and identity (as known when it is made), made
   * only when a handler logs something of its own.
   */
  get log (): Logger { return (this.#child ??= this.logger.child(whoFields(this.reqId, this.addr, this.clientAddr, this.identity as Identity | undefined))) }
}

/** An unmatched request's path for its log line: without the query, at most PATH_LOG_CHARS characters. */
function loggedPath (url: string | undefined): string {
  const u = url ?? ''
  const q = u.indexOf('?')
  const path = q === -1 ? u : u.slice(0, q)
  return path.length > PATH_LOG_CHARS ? `${path.slice(0, PATH_LOG_CHARS)}…` : path
}

export interface PipelineOptions {
  config: Readonly<Config>
  logger: Logger
  metrics: Metrics
  parts: GateParts
  router: Router<Handler>
  identify: (ctx: RequestContext) => void | Promise<void>
  /** Request ids are this prefix and a counter. */
  idPrefix: string
}

export interface Pipeline {
  /** The listener's 'request' handler. */
  handle (req: IncomingMessage, res: ServerResponse): void
  /** The listener's 'checkExpectation' handler: an Expect other than 100-continue. */
  expectationFailed (req: IncomingMessage, res: ServerResponse): void
  /** The listener's 'connect' handler: a CONNECT request, which node hands over with its bare socket. */
  connect (req: IncomingMessage, socket: Duplex): void
  readonly inflight: number
  /** From now on every response asks its client to close the connection. */
  startClosing (): void
  /** Resolves when no request is in flight. */
  drained (): Promise<void>
}

export function createPipeline (o: PipelineOptions): Pipeline {
  const { config, logger, metrics, parts, router } = o
  const forwarded = config.mode === 'forwarded'
  const writeLine = requestLineWriter(logger)
  let seq = 0
  let inflight = 0
  let closing = false
  const idle: Array<() => void> = []

  // The requests of each connection not booked yet (oldest first): a response queued behind a
  // pipelined one emits no 'close' when node destroys the socket, so the socket's own close books
  // what is left.
  const unbooked = new WeakMap<object, Context[]>()

  function start (req: IncomingMessage, res: ServerResponse): Context {
    const socket = req.socket
    let open = unbooked.get(socket)
    if (open === undefined) {
      const list: Context[] = open = []
      unbooked.set(socket, list)
      socket.once('close', () => { for (const c of [...list]) closed(c) })
    }
    const ctx = new Context(`${o.idPrefix}${(++seq).toString(16).padStart(10, '0')}`, req, res, performance.now(), logger, open)
    inflight++
    open.push(ctx)
    res.on('close', () => { closed(ctx) })
    if (closing) res.setHeader('connection', 'close')
    return ctx
  }

  /** The response or its connection closed: book it now, or once its handler settles (see settle). */
  function closed (ctx: Context): void {
    if (ctx.settling === undefined) book(ctx)
    else void ctx.settling.then(() => { book(ctx) })
  }

  function book (ctx: Context): void {
    if (ctx.booked) return
    ctx.booked = true
    const at = ctx.open.indexOf(ctx)
    if (at !== -1) ctx.open.splice(at, 1)
    inflight--
    // A request whose client left before any answer: logged as 499 (nginx's "client closed request").
    if (!ctx.answered && !ctx.res.headersSent) {
      ctx.res.statusCode = 499
      ctx.outcome = 'client_closed'
    }
    const ms = performance.now() - ctx.start
    const method = ctx.req.method ?? ''
    const status = ctx.res.statusCode
    metrics.requestDuration.observe({ route: ctx.route, method, status: String(status) }, ms / 1000)
    writeLine({
      reqId: ctx.reqId,
      addr: ctx.addr,
      clientAddr: ctx.clientAddr,
      identity: ctx.identity as Identity | undefined,
      method,
      route: ctx.route,
      path: ctx.route === UNMATCHED ? loggedPath(ctx.req.url) : undefined,
      status,
      ms,
      outcome: ctx.outcome,
      upstream: ctx.upstream,
    })
    if (inflight === 0) for (const resolve of idle.splice(0)) resolve()
  }

  /**
   * Forwarded mode, once the identity step ran: a request the proxy vouched for (its signature
   * verified) takes the proxy's request id and carries the client's address.
   */
  function adopt (ctx: Context): void {
    const headers = ctx.req.headers
    const rid = verifiedRequestId(headers)
    if (rid === undefined) return
    ctx.reqId = rid
    ctx.clientAddr = forwardedClientAddress(headers)
  }

  /**
   * A proxied request's handler sets its upstream status and time once the relay has finished,
   * after the response's close: its line waits for the handler (which ends when the response does).
   */
  function settle (ctx: Context, done: Promise<void>): void {
    ctx.settling = done.then(() => { ctx.settling = undefined })
  }

  function fail (ctx: Context, err: unknown): void {
    // An error after the answer was given (or started): the connection is not left in doubt.
    if (ctx.answered || ctx.res.headersSent) {
      ctx.log.error({ err }, 'error after the response was sent')
      ctx.res.destroy()
      return
    }
    // The client went away while its body was read (node's 'aborted', ECONNRESET): nobody to
    // answer, nothing unexpected. Any other failure goes the usual way, so store errors and bugs
    // are still counted and logged.
    if ((err as NodeJS.ErrnoException | undefined)?.code === 'ECONNRESET' && !ctx.req.complete) {
      ctx.outcome = 'client_closed'
      return
    }
    const e = toAogError(ctx, err)
    if (e.code === 'AOG_IDENTITY_REQUIRED' || e.code === 'AOG_NOT_AUTHORIZED' || e.code === 'AOG_SIGNATURE_INVALID') {
      metrics.identityFailures.inc({ reason: e.code })
      ctx.log.info({ reason: e.detail }, 'identity refused')
    }
    if (e.code === 'AOG_RATE_LIMITED') metrics.rateLimited.inc({ route: ctx.route, limit: e.reason === IN_FLIGHT_LIMIT ? 'in_flight' : 'rate' })
    if (ctx.route === '/task') metrics.submissions.inc({ outcome: 'rejected', reason: e.code })
    // A refusal of a protected request or /auth (not a failure of the upstream after it was allowed).
    if ((ctx.route === AUTH_PATH || ctx.route === UPSTREAM_ROUTE) && ctx.upstream === undefined) metrics.authDecisions.inc({ result: 'refused', code: e.code })
    ctx.outcome = e.reason === IN_FLIGHT_LIMIT ? IN_FLIGHT_LIMIT : e.code
    // 413, or an unread body that is chunked or longer than the limit (a protected request's, of
    // any length): the rest of the body is not drained, so the connection cannot be reused.
    if (e.status === 413 || (!ctx.req.complete && (ctx.route === UPSTREAM_ROUTE || unboundedBody(ctx.req, config.maxBodyBytes)))) ctx.res.shouldKeepAlive = false
    sendRefusal(ctx, e)
  }

  /**
   * Write the refusal `e` as problem+json with `status` (the code's own by default). On /auth a
   * refusal with its own status is shaped as /auth answers refusals (authRefusal: a reverse proxy's
   * auth_request passes 401 and 403 on).
   */
  function sendRefusal (ctx: Context, e: AogError, status: number = e.status): void {
    if (ctx.route === AUTH_PATH && status === e.status) {
      const r = authRefusal(e)
      const text = problemJson(e, undefined, r.status)
      ctx.send(r.status, problemHeaders(new AogError(e.code, e.detail, { headers: r.headers, ...(e.retryAfter === undefined ? {} : { retryAfter: e.retryAfter }) }), text), text)
      return
    }
    const text = problemJson(e, undefined, status)
    ctx.send(status, problemHeaders(e, text), text)
  }

  /**
   * Answer `e` (with `status`, the code's own by default) to a request no handler may serve, and
   * close its connection (a body, if any, is not read). Booked under its route when its path is
   * one (a 405 on it included), with the identity when the identity step can tell it (its refusal
   * does not change this answer).
   */
  function refuse (ctx: Context, e: AogError, status: number = e.status): void {
    const { req, res } = ctx
    res.shouldKeepAlive = false
    try { router.find(req.method ?? '', req.url ?? '/', ctx) } catch {}
    try {
      o.identify(ctx)?.catch(() => {})
    } catch {} finally {
      if (forwarded) adopt(ctx)
    }
    ctx.outcome = e.code
    sendRefusal(ctx, e, status)
  }

  function toAogError (ctx: Context, err: unknown): AogError {
    if (err instanceof AogError) return err
    if (err instanceof StoreUnavailableError) {
      // Labelled by the store operation that failed (issue, consume, …), not the route.
      metrics.storeErrors.inc({ op: storeOpOf(err) })
      ctx.log.warn({ err: err.message }, 'store unavailable')
      return new AogError('AOG_UNAVAILABLE', 'the challenge store is unavailable; try again shortly', { retryAfter: 1 })
    }
    if (err instanceof PoolBusyError) {
      ctx.log.warn({ reason: err.reason }, 'verification pool refused the task')
      return err.reason === 'closed'
        ? new AogError('AOG_UNAVAILABLE', 'the gate is shutting down', { retryAfter: 1 })
        : new AogError('AOG_OVERLOADED', 'verification is overloaded; try again shortly', { retryAfter: 1 })
    }
    // A bug, not bad input: fail closed with 503, keep the cause in the log only.
    ctx.log.error({ err }, 'unexpected error')
    return new AogError('AOG_UNAVAILABLE', 'internal error; try again shortly', { retryAfter: 1 })
  }

  return {
    handle (req, res) {
      const ctx = start(req, res)
      // A handler that finishes synchronously costs no promise; a rejection goes where a throw goes.
      try {
        // A target or framing no route may serve (`#`, Host, Transfer-Encoding): 400 before
        // routing and the identity step, as node's own parser errors are.
        const bad = malformed(req)
        if (bad !== undefined) {
          refuse(ctx, bad)
          return
        }
        // The route is known before the identity step (which refuses first) so that a refusal is
        // answered as its route answers (/auth reshapes them) and booked under it.
        let handler: Handler | undefined
        let notFound: unknown
        try { handler = router.find(req.method ?? '', req.url ?? '/', ctx) } catch (err) { notFound = err }
        // Of the gate's own routes only POST reads a body: any other request that declares one is
        // answered and its connection closed, so the body is not read (node would drain it,
        // whatever its length, to keep the connection). Protected requests stream theirs upstream.
        if (req.method !== 'POST' && ctx.route !== UPSTREAM_ROUTE && declaresBody(req)) res.shouldKeepAlive = false
        let identified: void | Promise<void>
        try {
          identified = o.identify(ctx)
        } finally {
          if (forwarded) adopt(ctx)
        }
        // A proxied response is written by the upstream relay, with this among its headers.
        if (ctx.route === UPSTREAM_ROUTE) res.setHeader('x-request-id', ctx.reqId)
        if (identified !== undefined) {
          // A signature identity (Web Bot Auth) may wait for its key directory.
          const done = identified.then(async () => {
            if (handler === undefined) throw notFound
            await handler(ctx, parts)
          }).catch((err: unknown) => { fail(ctx, err) })
          if (ctx.route === UPSTREAM_ROUTE) settle(ctx, done)
          return
        }
        if (handler === undefined) throw notFound
        const pending = handler(ctx, parts)
        if (pending !== undefined) {
          const done = pending.catch((err: unknown) => { fail(ctx, err) })
          if (ctx.route === UPSTREAM_ROUTE) settle(ctx, done)
        }
      } catch (err) {
        fail(ctx, err)
      }
    },
    expectationFailed (req, res) {
      // Node would write a bare 417; the gate answers it as problem+json like any refusal, and
      // closes the connection. A malformed request is a 400 first, as in handle.
      const ctx = start(req, res)
      const bad = malformed(req)
      if (bad !== undefined) refuse(ctx, bad)
      else refuse(ctx, new AogError('AOG_BAD_REQUEST', 'only Expect: 100-continue is supported'), 417)
    },
    connect (req, duplex) {
      // CONNECT asks for a tunnel, which the gate never opens, to the upstream or anywhere (node
      // emits 'connect' instead of 'request', and without a listener would close the connection
      // unanswered). A response is made on its socket so that it is answered and booked as every
      // refusal is, and the socket closed once the answer is written.
      const socket = duplex as Socket
      // Node has taken its own listeners off the socket: an error (a reset) would otherwise be unhandled.
      socket.on('error', () => { socket.destroy() })
      // Pipelined behind a request still being answered, the socket carries that response: this one
      // cannot be written after it here, so the connection is closed, as node would close it (the
      // request before it is booked when its connection closes).
      if ((socket as { _httpMessage?: unknown })._httpMessage != null) {
        socket.destroy()
        return
      }
      try {
        const res = new ServerResponse(req)
        res.assignSocket(socket)
        res.once('finish', () => { socket.destroySoon() })
        // A peer that reads nothing does not keep the socket past a second.
        setTimeout(() => { socket.destroy() }, 1000).unref()
        refuse(start(req, res), new AogError('AOG_BAD_REQUEST', 'CONNECT is not supported'))
      } catch (err) {
        // Never thrown out of node's parser callback, where it would end the process.
        socket.destroy()
        logger.warn({ err: (err as Error).message }, 'a CONNECT request could not be answered; its connection was closed')
      }
    },
    get inflight () { return inflight },
    startClosing () { closing = true },
    drained () {
      return inflight === 0 ? Promise.resolve() : new Promise<void>((resolve) => { idle.push(resolve) })
    },
  }
}

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
