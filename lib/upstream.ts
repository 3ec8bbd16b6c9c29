/**
 * The reverse proxy of direct mode (docs/protocol.md section 7): an allowed protected request is
 * forwarded to the upstream over a pool of kept-alive undici connections, its body streamed both
 * ways, and the upstream's answer, errors included, passed back unchanged but for hop-by-hop headers.
 *
 * Header rules toward the upstream:
 * - `Host` is the upstream URL's host (nginx `proxy_pass`'s default): the upstream is addressed by
 *   its own name, and the Host the client sent goes in `X-Forwarded-Host`.
 * - `X-Forwarded-For` is SET to the client's address, not appended to: in direct mode the gate is
 *   the edge, so any value a client sent is its own claim and is dropped, as are `Forwarded` and
 *   every `X-Forwarded-*` (the gate sets `-Proto` and `-Host`).
 * - Every client-sent `X-AOG-*` header is removed, then `X-AOG-Agent` is set from the assertion.
 * - Hop-by-hop headers (Connection and the headers it names, Keep-Alive, Proxy-Connection, TE,
 *   Trailer, Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate) are dropped both ways.
 * - A name is compared with `_` read as `-`: servers that map both to one variable (CGI, Rack, PHP)
 *   would otherwise take `X_AOG_Agent` or `X_Forwarded_For` for the gate's own header.
 *
 * Targets: a path with a dot-segment (`.`, `..`, `%2e` in any case), or a target with `#`, is refused
 * with 400, so that an upstream that normalises the path cannot be led out of the URL's path prefix.
 *
 * Time: no upstream response headers within `timeoutMs` is 504, whether the request was sent or is
 * still waiting for a pool connection (it is then never sent). At most 4 x `connections` requests
 * wait for a connection; beyond that 503 at once. A relay whose client does not take the bytes for
 * `timeoutMs` (its socket does not drain) is cut, which frees the connection.
 *
 * Errors: before anything was written to the client, `forward` rejects with an AogError (400, 413,
 * 502, 503, 504) for the caller to answer as problem+json. Once the upstream's headers were written,
 * a failure destroys the client's response (the only honest signal left) and `forward` resolves with
 * the upstream status and `cut` saying why; it never rejects then.
 */
import { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { finished, Transform, type Readable } from 'node:stream'
import { Pool } from 'undici'
import { AogError } from './errors.js'
import { DOT_SEGMENT } from './http/request.js'

export interface UpstreamOptions {
  /** http:// or https:// origin, optionally with a path prefix (no query). */
  url: string
  /** CA bundle an https upstream's certificate must chain to (default: the system CAs). */
  ca?: Buffer | undefined
  /** Largest request body forwarded; beyond it 413 (or the exchange is cut once answered). */
  maxBodyBytes: number
  /** Upstream silence allowed before its response headers (504), and within its body (cut). */
  timeoutMs: number
  /** Kept-alive connections to the upstream at most. */
  connections: number
  /** Requests one identity may have in flight at once (hold); default half of `connections`, at least 1. */
  maxPerIdentity?: number | undefined
}

export interface ForwardInfo {
  clientIp: string
  /** The gate's request id, sent as X-Request-Id (a client's own is dropped). */
  requestId?: string
  proto: 'https' | 'http'
  /** The Host the client sent. */
  host: string
  /** The X-AOG-Agent value (the gate's signed assertion). */
  assertion?: string
  /**
   * Frees the caller's place (hold): called once, when undici lets go of the request (a request
   * answered 504 or 499 while queued keeps its place until then), or when forward refuses it unsent.
   */
  release?: () => void
}

/** Why an exchange did not complete after `forward` stopped being able to answer with an error. */
export type CutReason = 'client_closed' | 'client_stalled' | 'upstream_failed' | 'upstream_timeout' | 'body_too_large'

export interface ForwardResult {
  /** The upstream's status; 499 when the client left before the upstream answered. */
  status: number
  /** Absent when the response was written in full. Otherwise the response was destroyed (or never written: 499). */
  cut?: { reason: CutReason, cause: unknown }
}

export interface UpstreamStats { connected: number, free: number, pending: number, running: number, size: number }

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding',
  'upgrade', 'proxy-authorization', 'proxy-authenticate'])

// Client request headers never forwarded as sent: hop-by-hop, the ones the gate sets itself, Expect
// (node has answered 100-continue already) and Content-Length (re-added only with a body); and,
// by prefix, X-AOG-* and X-Forwarded-*.
const REQUEST_DROPPED = new Set([...HOP_BY_HOP, 'host', 'expect', 'content-length', 'forwarded', 'x-real-ip', 'x-request-id'])

// Requests that may wait for a pool connection, per connection.
const QUEUED_PER_CONNECTION = 4

// A reason phrase node accepts as it is (anything else gets the standard phrase).
const REASON_PHRASE = /^[\t\x20-\x7e]*$/

function noop (): void {}

function tooLarge (max: number): AogError {
  return new AogError('AOG_BODY_TOO_LARGE', `the request body exceeds ${max} bytes`)
}

function timedOut (cause?: unknown): AogError {
  return new AogError('AOG_UPSTREAM_TIMEOUT', 'the upstream did not answer in time', { cause })
}

/** Refusals that need no upstream (see `Upstream.check`), or undefined. */
function badTarget (req: IncomingMessage): AogError | undefined {
  // Upgrade (WebSocket, h2c) and CONNECT turn the connection into a tunnel the pool cannot carry.
  if (req.method === 'CONNECT' || req.headers.upgrade !== undefined) {
    return new AogError('AOG_BAD_REQUEST', 'Upgrade and CONNECT requests are not supported by the upstream proxy')
  }
  const target = req.url ?? ''
  if (!target.startsWith('/')) return new AogError('AOG_BAD_REQUEST', 'the request target must be a path')
  // Origin-form has no fragment; after the prefix, `/..#x` would be `/base/..#x`, which a
  // normalising upstream resolves to `/`, hiding the final `..` from the dot-segment check.
  if (target.includes('#')) return new AogError('AOG_BAD_REQUEST', 'the request target must not contain "#" (a fragment is not sent)')
  const query = target.indexOf('?')
  if (DOT_SEGMENT.test(query === -1 ? target : target.slice(0, query))) {
    return new AogError('AOG_BAD_REQUEST', 'the request path must not have a "." or ".." segment')
  }
  return undefined
}

/**
 * The reason (AogError.reason) of the 429 for an identity at --upstream-max-per-identity: the log's
 * outcome, and `limit="in_flight"` in aog_rate_limited_total (the token bucket's is `rate`).
 */
export const IN_FLIGHT_LIMIT = 'in_flight_limit'

/** The client left: the abort reason of its upstream request. */
class ClientClosed extends Error {
  constructor () {
    super('the client closed the connection')
    this.name = 'ClientClosed'
  }
}

/** The client did not take the response's bytes for the timeout. */
class ClientStalled extends Error {
  constructor () {
    super('the client did not read the response in time')
    this.name = 'ClientStalled'
  }
}

export class Upstream {
  readonly #pool: Pool
  readonly #prefix: string
  readonly #host: string
  readonly #maxBodyBytes: number
  readonly #timeoutMs: number
  /** Requests undici holds (waiting for a connection, running, or streaming their response), and their bound. */
  #held = 0
  readonly #maxHeld: number
  /** Requests in flight by identity (hold), and their bound. */
  readonly #byIdentity = new Map<string, number>()
  readonly #maxPerIdentity: number
  #closing: Promise<void> | undefined

  constructor (opts: UpstreamOptions) {
    const url = new URL(opts.url)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`upstream must be http:// or https://, not ${url.protocol}`)
    this.#prefix = url.pathname.replace(/\/+$/, '')
    this.#host = url.host
    this.#maxBodyBytes = opts.maxBodyBytes
    this.#timeoutMs = opts.timeoutMs
    this.#maxHeld = opts.connections * (1 + QUEUED_PER_CONNECTION)
    this.#maxPerIdentity = opts.maxPerIdentity ?? Math.max(1, Math.floor(opts.connections / 2))
    this.#pool = new Pool(url.origin, {
      connections: opts.connections,
      // The wait for the response headers is timed by forward() (time spent waiting on the
      // client's upload does not count against the upstream); undici times the body's pauses,
      // except while the body is paused by backpressure (relay times those).
      headersTimeout: 0,
      bodyTimeout: opts.timeoutMs,
      connect: { ca: opts.ca, timeout: opts.timeoutMs },
    })
  }

  /**
   * Throws the refusals that need no upstream, so the caller can refuse before it spends a grant
   * (forward checks them again): Upgrade, CONNECT (answered by the listener before it gets here), a
   * target that is not a path, has `#` or whose path has a dot-segment (400), a Content-Length over
   * maxBodyBytes (413), every place in the pool's queue taken (503).
   */
  check (req: IncomingMessage): void {
    const bad = badTarget(req)
    if (bad !== undefined) throw bad
    const length = req.headers['content-length']
    if (length !== undefined && Number(length) > this.#maxBodyBytes) throw tooLarge(this.#maxBodyBytes)
    if (this.#held >= this.#maxHeld) throw new AogError('AOG_OVERLOADED', 'the upstream connections are busy; try again shortly', { retryAfter: 1 })
  }

  /**
   * Count a request of `identity` in flight until the returned release is called (given to forward,
   * it is called once undici lets go of the request), or throw 429 when that identity already has
   * its bound in flight: a slow reader holds its pool connection for as long as it reads, and a
   * request answered 504 while queued keeps its queue place, so one agent must not take them all.
   */
  hold (identity: string): () => void {
    const n = this.#byIdentity.get(identity) ?? 0
    if (n >= this.#maxPerIdentity) {
      throw new AogError('AOG_RATE_LIMITED', `this identity already has ${this.#maxPerIdentity} proxied requests in flight; try again once one is answered`, { retryAfter: 1, reason: IN_FLIGHT_LIMIT })
    }
    this.#byIdentity.set(identity, n + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const left = this.#byIdentity.get(identity)! - 1
      if (left === 0) this.#byIdentity.delete(identity)
      else this.#byIdentity.set(identity, left)
    }
  }

  /** Proxy `req` to the upstream and write its answer to `res` (errors: see the module comment). */
  async forward (req: IncomingMessage, res: ServerResponse, info: ForwardInfo): Promise<ForwardResult> {
    // Refused unsent: the caller's place is free at once.
    try {
      this.check(req)
    } catch (err) {
      info.release?.()
      // A 413's body is not read: the connection cannot carry another request.
      if (err instanceof AogError && err.status === 413) res.shouldKeepAlive = false
      throw err
    }
    // The client left while the gate was deciding (a store round trip): its response's close, and
    // its upload's end, came before forward could listen, so nothing would end the exchange.
    if (req.socket.destroyed || res.destroyed) {
      info.release?.()
      return { status: 499, cut: { reason: 'client_closed', cause: new ClientClosed() } }
    }
    const target = req.url!
    const length = req.headers['content-length']
    // The client's headers, then the ones the gate sets.
    const headers = copyHeaders(req.rawHeaders, REQUEST_DROPPED, true, ['host', this.#host])
    headers.push('x-forwarded-for', info.clientIp, 'x-real-ip', info.clientIp, 'x-forwarded-proto', info.proto, 'x-forwarded-host', info.host)
    if (info.assertion !== undefined) headers.push('x-aog-agent', info.assertion)
    if (info.requestId !== undefined) headers.push('x-request-id', info.requestId)
    const body = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0') ? this.#limited(req) : undefined
    if (body !== undefined && length !== undefined) headers.push('content-length', length)

    // undici takes an EventEmitter as its abort signal: cheaper per request than an AbortController
    // (docs/benchmarks.md); the reason is kept here, since undici reports any abort as its own error.
    // A request still waiting for a pool connection learns of its abort only once it gets one:
    // `stopped` answers for it now (undici then drops it unsent).
    const signal = new EventEmitter()
    let aborted: Error | undefined
    let stop: (reason: Error) => void = noop
    const stopped = new Promise<never>((_resolve, reject) => { stop = reject })
    const abort = (reason: Error): void => {
      if (aborted !== undefined) return
      aborted = reason
      signal.emit('abort')
      stop(reason)
    }
    res.once('close', () => { if (!res.writableFinished) abort(new ClientClosed()) })

    // The wait for the upstream's headers, paused while the upload waits on the client: armed
    // from the start, off while undici reads the body, on again when the upstream stops reading
    // it (undici pauses the body) and once the whole body was handed over.
    let timer: NodeJS.Timeout | undefined
    let answered = false
    const arm = (): void => {
      if (answered) return
      clearTimeout(timer)
      timer = setTimeout(() => { abort(timedOut()) }, this.#timeoutMs)
    }
    arm()
    if (body !== undefined) {
      body.on('pause', arm)
      body.on('end', arm)
      body.on('resume', () => { if (body.readableFlowing === true) clearTimeout(timer) })
    }

    const request = this.#pool.request({
      path: this.#prefix + target,
      method: req.method ?? 'GET',
      headers,
      body,
      signal,
      responseHeaders: 'raw',
    })
    // Held until undici lets go of it: its answer's body closed, or its failure (a request
    // answered 504 while waiting in the queue stays there until a connection drops it).
    this.#held++
    const letGo = (): void => {
      this.#held--
      info.release?.()
    }
    request.then((d) => { d.body.once('close', letGo) }, letGo)
    let data: Awaited<typeof request>
    try {
      data = await Promise.race([request, stopped])
    } catch (thrown) {
      // An answer that would still come is not used: dropping its body frees the connection.
      request.then((d) => { d.body.destroy() }, noop)
      const err = aborted ?? thrown
      if (body !== undefined) {
        req.unpipe(body)
        body.destroy()
      }
      if (err instanceof ClientClosed || req.socket.destroyed) return { status: 499, cut: { reason: 'client_closed', cause: err } }
      // The client's body was not read to its end: the connection cannot carry another request.
      if (!req.complete) res.shouldKeepAlive = false
      throw toAogError(err)
    } finally {
      answered = true
      clearTimeout(timer)
    }

    const status = data.statusCode
    // The upstream answered while the client was still uploading: close the connection after this answer.
    if (!req.complete) res.shouldKeepAlive = false
    try {
      const out = copyHeaders(data.headers as unknown as string[], HOP_BY_HOP, false, [])
      if (REASON_PHRASE.test(data.statusText)) res.writeHead(status, data.statusText, out)
      else res.writeHead(status, out)
    } catch (err) {
      // Headers node refuses to send: nothing was written, the answer is still ours to give.
      data.body.destroy()
      throw new AogError('AOG_UPSTREAM_UNAVAILABLE', 'the upstream sent a response that cannot be relayed', { cause: err })
    }

    let failure: unknown
    if (req.method === 'HEAD' || status === 204 || status === 304) {
      // No body, whatever the headers say: undici fails a 204 or 304 that carries a Content-Length
      // (its parser expects that many bytes), which must not cut a complete answer.
      data.body.on('error', noop).resume()
      failure = await new Promise<unknown>((resolve) => {
        const forget = onConnectionClose(req.socket, () => { resolve(new ClientClosed()) })
        finished(res, (err) => { forget(); resolve(err) })
        res.end()
      })
    } else {
      failure = await relay(data.body, res, this.#timeoutMs, req.socket)
    }
    if (failure === undefined || failure === null) return { status }
    if (body !== undefined) req.unpipe(body)
    res.destroy()
    return { status, cut: { reason: cutReason(aborted ?? failure), cause: aborted ?? failure } }
  }

  /** Pool gauges for metrics (undici Pool stats). */
  stats (): UpstreamStats {
    const s = this.#pool.stats
    return { connected: s.connected, free: s.free, pending: s.pending, running: s.running, size: s.size }
  }

  /** Closes the pool once its requests are done; later forwards fail (502). */
  async close (): Promise<void> {
    this.#closing ??= this.#pool.close()
    await this.#closing
  }

  /** The request body as a stream that fails with 413 once it grows past the limit. */
  #limited (req: IncomingMessage): Transform {
    const max = this.#maxBodyBytes
    let seen = 0
    const body = new Transform({
      transform (chunk: Buffer, _enc, cb) {
        seen += chunk.length
        if (seen > max) cb(tooLarge(max))
        else cb(null, chunk)
      },
    })
    // A client that leaves mid-upload fails the body, so undici aborts the upstream request.
    req.once('error', (err) => { body.destroy(err) })
    req.pipe(body)
    return body
  }
}

/**
 * Calls `f` once `socket` closes (now, if it has); returns what stops that. A response queued behind
 * a pipelined one emits neither 'finish' nor 'close' when its connection is destroyed: the
 * connection's own close ends its exchange.
 */
function onConnectionClose (socket: Socket, f: () => void): () => void {
  if (socket.destroyed) {
    f()
    return noop
  }
  socket.once('close', f)
  return () => { socket.off('close', f) }
}

/**
 * Pipe the upstream's body to the client; resolves with the failure, if any (the caller then
 * destroys `res`). stream.pipeline would do the same, but makes an AbortController per call and
 * aborts it (a DOMException with its stack) when done: a few percent of the proxy's CPU per request.
 *
 * A client that does not take the bytes makes pipe pause the body until `res` drains; undici does
 * not time a paused body, so a pause longer than `stallMs` fails the relay here (and destroys the
 * body, which frees its pool connection).
 */
async function relay (body: Readable, res: ServerResponse, stallMs: number, socket: Socket): Promise<unknown> {
  return await new Promise<unknown>((resolve) => {
    let settled = false
    let stall: NodeJS.Timeout | undefined
    const gone = (): void => {
      if (res.writableFinished) return
      body.destroy()
      settle(new ClientClosed())
    }
    let forget = noop
    // The first event settles it.
    const settle = (failure: unknown): void => {
      if (settled) return
      settled = true
      clearTimeout(stall)
      forget()
      resolve(failure)
    }
    body.once('error', settle)
    res.once('finish', () => { settle(undefined) })
    res.once('close', gone)
    forget = onConnectionClose(socket, gone)
    body.on('pause', () => {
      if (settled || stall !== undefined) return
      stall = setTimeout(() => {
        body.destroy()
        settle(new ClientStalled())
      }, stallMs)
    })
    body.on('resume', () => {
      clearTimeout(stall)
      stall = undefined
    })
    body.pipe(res)
  })
}

/** A header name as compared: lowercase, `_` read as `-`. */
function nameOf (name: string): string {
  const lower = name.toLowerCase()
  return lower.includes('_') ? lower.replaceAll('_', '-') : lower
}

/**
 * `raw` (a flat name/value list) appended to `out` in its order and case, duplicates kept, without
 * the names in `dropped`, the ones a Connection header lists, and, when `fromClient`, X-AOG-* and
 * X-Forwarded-*; names compared by nameOf.
 */
function copyHeaders (raw: string[], dropped: Set<string>, fromClient: boolean, out: string[]): string[] {
  const named = new Set<string>()
  for (let i = 0; i < raw.length; i += 2) {
    if (nameOf(raw[i]!) !== 'connection') continue
    for (const token of raw[i + 1]!.split(',')) named.add(nameOf(token.trim()))
  }
  for (let i = 0; i < raw.length; i += 2) {
    const name = nameOf(raw[i]!)
    if (dropped.has(name) || named.has(name) || (fromClient && (name.startsWith('x-aog-') || name.startsWith('x-forwarded-')))) continue
    out.push(raw[i]!, raw[i + 1]!)
  }
  return out
}

/** A failure before the upstream's headers, as the gate answers it. */
function toAogError (err: unknown): AogError {
  if (err instanceof AogError) return err
  const code = (err as { code?: unknown } | null)?.code
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT') return timedOut(err)
  // Refused, reset, DNS, TLS, a malformed response, a closed pool: the upstream cannot be used.
  return new AogError('AOG_UPSTREAM_UNAVAILABLE', 'the upstream could not be reached', { cause: err })
}

/** Why a response already started was cut. */
function cutReason (err: unknown): CutReason {
  if (err instanceof ClientClosed || (err as { code?: unknown }).code === 'ERR_STREAM_PREMATURE_CLOSE') return 'client_closed'
  if (err instanceof ClientStalled) return 'client_stalled'
  if (err instanceof AogError) return err.code === 'AOG_BODY_TOO_LARGE' ? 'body_too_large' : 'upstream_timeout'
  if ((err as { code?: unknown }).code === 'UND_ERR_BODY_TIMEOUT') return 'upstream_timeout'
  return 'upstream_failed'
}
