/**
 * After the pass (docs/protocol.md section 7): the protected request, proxied to --upstream in
 * direct mode, and GET /auth, the authorization subrequest of a reverse proxy. Both make the same
 * checks: identity and revocation (the pipeline's identity step), then one atomic store call that
 * takes a token from the identity's upstream bucket, checks its grant and counts the request.
 * An allowed request carries X-AOG-Agent, the gate's signed assertion of who called.
 */
import type { IncomingMessage } from 'node:http'
import { AogError } from '../errors.js'
import { BASE_HEADERS } from '../http/reply.js'
import { cnfOf } from '../assertion.js'
import { AuthorizeStatus } from '../stores/store.js'
import { rateLimited, replayedIdentity, type Handler, type RequestContext, type GateParts } from './context.js'

/** The gate's own paths: never proxied (docs/protocol.md section 7). */
export const AUTH_PATH = '/auth'
const RESERVED_PREFIX = '/.well-known/aog/'

/** The route label of a proxied request (metrics and logs: one label, not the path). */
export const UPSTREAM_ROUTE = 'upstream'

/** What the 401 of an identity without a live grant carries: how to get one. */
const GRANT_HEADERS = {
  'www-authenticate': 'AOG challenge="/challenge"',
  link: '</challenge>; rel="https://aog.dev/rel/challenge"',
}

/**
 * Allow a request or throw its refusal: one store call takes an upstream token, checks the grant and
 * counts the request; then the decision is counted and the X-AOG-Agent returned.
 */
async function allow (ctx: RequestContext, parts: GateParts, method: string, target: string): Promise<string> {
  const { config, store } = parts
  const rate = { burst: config.upstreamRateBurst, perSecond: config.upstreamRatePerSecond }
  const a = await store.authorize({ fingerprint: ctx.identity.fingerprint, rate, once: ctx.once })
  switch (a.status) {
    case AuthorizeStatus.REPLAYED: throw replayedIdentity(ctx)
    case AuthorizeStatus.RATE_LIMITED: throw rateLimited(a.rate, rate.perSecond)
    case AuthorizeStatus.NO_GRANT: throw new AogError('AOG_GRANT_REQUIRED', 'no live grant for this identity: pass a challenge first (GET /challenge, then POST /task)', { headers: GRANT_HEADERS })
  }
  if (parts.assertion === undefined) throw new Error('no assertion signer')
  const { fingerprint, source } = ctx.identity
  const cnf = cnfOf({ fingerprint, kind: source === 'signature' ? 'signature-key' : 'certificate' })
  const jws = parts.assertion.sign({ sub: fingerprint, htm: method, htu: target, cnf, grant_exp: a.grant.expiresAt })
  parts.metrics.authDecisions.inc({ result: 'allowed', code: 'ok' })
  ctx.outcome = 'ok'
  return jws
}

/** A header sent exactly once (a repeated one is never trusted), non-empty. */
function once (req: IncomingMessage, name: string): string | undefined {
  const v = req.headersDistinct[name]
  return v !== undefined && v.length === 1 && v[0] !== '' ? v[0] : undefined
}

/** Envoy's ext_authz (HTTP service) form: the original method, and the original target after this prefix. */
export const AUTH_PREFIX = '/auth/'

/**
 * The original method and request target of an authorization subrequest: X-Original-Method and
 * X-Original-URI (nginx), or X-Forwarded-Method and X-Forwarded-Uri (Traefik); or, on a path under
 * /auth/ without them, the request's own method and the rest of its target (Envoy's ext_authz
 * sends the original method to its path_prefix + the original path). Undefined when a header is
 * missing or repeated, or the target is not an origin-form path.
 */
export function originalRequest (req: IncomingMessage): { method: string, target: string } | undefined {
  let method = once(req, 'x-original-method') ?? once(req, 'x-forwarded-method')
  let target = once(req, 'x-original-uri') ?? once(req, 'x-forwarded-uri')
  const url = req.url ?? ''
  if (method === undefined && target === undefined && url.startsWith(AUTH_PREFIX)) {
    method = req.method
    target = url.slice(AUTH_PREFIX.length - 1)
  }
  if (method === undefined || target === undefined || !/^[A-Z]{1,16}$/.test(method) || !target.startsWith('/')) return undefined
  return { method, target }
}

const NO_CONTENT = Object.entries(BASE_HEADERS).flat()

/**
 * GET /auth (and any method under /auth/, Envoy's form): 204 (200 under /auth/) with X-AOG-Agent
 * when allowed; a refusal is reshaped by authRefusal.
 */
export const getAuth: Handler = async (ctx, parts) => {
  const original = originalRequest(ctx.req)
  if (original === undefined) throw new AogError('AOG_BAD_REQUEST', 'X-Original-Method and X-Original-URI (or X-Forwarded-Method and X-Forwarded-Uri) are required')
  const jws = await allow(ctx, parts, original.method, original.target)
  // Envoy allows on 200 only; nginx and Traefik take any 2xx.
  if (ctx.req.url?.startsWith(AUTH_PREFIX) === true) ctx.send(200, [...NO_CONTENT, 'content-length', '0', 'x-aog-agent', jws], '')
  else ctx.send(204, [...NO_CONTENT, 'x-aog-agent', jws], '')
}

/**
 * A refusal of /auth as a reverse proxy can pass it on: auth_request and friends take only 2xx,
 * 401 and 403, so the real status and code travel in X-AOG-Status and X-AOG-Code (the proxy's
 * configuration turns them back into the real answer; see nginx/aog.conf).
 */
export function authRefusal (e: AogError): { status: number, headers: Record<string, string> } {
  return {
    status: e.status === 401 ? 401 : 403,
    headers: { ...e.headers, 'x-aog-code': e.code, 'x-aog-status': String(e.status) },
  }
}

/** Every path not the gate's own, with --upstream: checked, then proxied. */
export const proxyRequest: Handler = async (ctx, parts) => {
  const { req } = ctx
  const target = req.url ?? '/'
  // The reserved prefix holds no '?': testing the target is testing its path.
  if (parts.upstream === undefined || target.startsWith(RESERVED_PREFIX)) throw new AogError('AOG_NOT_FOUND', 'no such route')
  // A request the upstream would not get (a bad target, a Content-Length over the limit, a full
  // queue, too many of this identity's in flight) is refused before the grant is spent.
  parts.upstream.check(req)
  const release = parts.upstream.hold(ctx.identity.fingerprint)
  let jws: string
  try {
    jws = await allow(ctx, parts, req.method ?? 'GET', target)
  } catch (err) {
    release()
    throw err
  }
  // From here the place is forward's to free: when undici lets go of the request.
  await relay(ctx, parts, parts.upstream, jws, release)
}

/** The allowed request to the upstream and its answer back, booked on the context and the metrics. */
async function relay (ctx: RequestContext, parts: GateParts, upstream: NonNullable<GateParts['upstream']>, jws: string, release: () => void): Promise<void> {
  const { req, res } = ctx
  const t0 = performance.now()
  let status = 0
  try {
    const r = await upstream.forward(req, res, { clientIp: req.socket.remoteAddress ?? '', proto: 'https', host: req.headers.host ?? '', assertion: jws, requestId: ctx.reqId, release })
    status = r.status
    // Cut after the answer started: the connection was destroyed; the log line says why.
    if (r.cut !== undefined) {
      ctx.outcome = r.cut.reason
      if (r.cut.reason !== 'client_closed') ctx.log.warn({ reason: r.cut.reason, err: (r.cut.cause as Error | undefined)?.message }, 'upstream exchange cut')
    }
  } finally {
    // A failure before the upstream answered is booked as status 0 (the client gets 413/502/504).
    const seconds = (performance.now() - t0) / 1000
    ctx.upstream = { status, ms: Math.round(seconds * 100_000) / 100 }
    parts.metrics.upstreamRequests.inc({ status_class: status === 0 ? 'error' : `${Math.floor(status / 100)}xx` })
    parts.metrics.upstreamDuration.observe(seconds)
  }
}
