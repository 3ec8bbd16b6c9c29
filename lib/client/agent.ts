/**
 * The agent library: fetch a challenge, solve it, submit it, over mTLS with undici; then call the
 * protected upstream behind the gate (docs/protocol.md section 7).
 *
 *   const agent = createAgent({ url, cert, key, ca })
 *   const result = await pass(agent)      // one whole round
 *   // where the gate requires an attestation: a function that returns one for each challenge
 *   createAgent({ url, cert, key, ca, attestation: localAttestationSigner({ key: file, issuer }) })
 *   const res = await agent.fetch('/api') // a protected request: passes the gate when it must
 *   await agent.close()
 *
 * `solve(challenge, fingerprint)` is usable on its own by any program: it returns the complete
 * POST /task body (checkpoints and trace hash included).
 */
import { Agent, request, type Dispatcher } from 'undici'
import { createPrivateKey, createPublicKey, KeyObject, X509Certificate } from 'node:crypto'
import { signRequest } from '../webbotauth/sign.js'
import { keyThumbprint } from '../webbotauth/httpsig.js'
import { performance } from 'node:perf_hooks'
import { chainKey, initialDigest, solveChain, traceHash, type ChainImpl } from '../chain/chain.js'
import { ALGORITHM, checkShape } from '../protocol/constants.js'
import { bestChain } from '../chain/select.js'
import { loadNative } from '../chain/native.js'
import { fingerprintOf } from '../identity/tls.js'
import { isChallengeResponse, type ChallengeResponse, type TaskBody, type TaskResponse } from '../protocol/schemas.js'
import type { AttestationProvider } from '../attestation-signer.js'

export type { ChallengeResponse, TaskBody, TaskResponse, AttestationProvider }
export { localAttestationSigner, localAttestationJwks, type LocalAttestationSignerOptions } from '../attestation-signer.js'

export interface AgentOptions {
  /** Base URL of the gate, e.g. https://localhost:8443 */
  url: string
  /** Client certificate and key (PEM), and the CA that signed the gate's certificate. */
  cert?: string | Buffer
  key?: string | Buffer
  ca?: string | Buffer
  /**
   * Web Bot Auth (docs/protocol.md section 8), instead of a certificate: every request is signed
   * (RFC 9421, Ed25519, a fresh nonce) with `key`, whose directory `directoryUrl` is sent as
   * Signature-Agent; F is the key's RFC 7638 thumbprint in hex.
   */
  signing?: { key: KeyObject | string | Buffer, directoryUrl: string, validitySeconds?: number }
  /** Connections kept to the gate (default 8). */
  connections?: number
  /**
   * The clock a grant's `expires_at` is compared with (default Date.now). The gate's clock is
   * assumed roughly in step; a grant that ends early on the gate's clock costs one 401 and a retry.
   */
  now?: () => number
  /**
   * Where the gate requires (or checks) attestation: called for each challenge before it is
   * submitted, with the challenge and F; resolves with the compact JWS sent as `attestation`
   * (docs/protocol.md section 4, step 7). `localAttestationSigner` is one for development.
   */
  attestation?: AttestationProvider
}

/** What agent.fetch sends besides the path: undici's request options that make sense here. */
export type FetchInit = Partial<Pick<Dispatcher.RequestOptions, 'method' | 'headers' | 'body' | 'signal' | 'headersTimeout' | 'bodyTimeout'>>

/** agent.fetch's answer: undici's request result, the upstream's response as it sent it. */
export type FetchResponse = Dispatcher.ResponseData

export interface AogAgent {
  readonly url: string
  /** F of the client certificate. */
  readonly fingerprint: string
  readonly dispatcher: Dispatcher
  /**
   * A protected request (docs/protocol.md section 7) to `path` (with its query) on the gate, which
   * proxies it to its upstream. The agent passes the gate when it must: before sending, when the
   * grant it holds is about to expire or its request budget is spent, and once after a
   * `401 AOG_GRANT_REQUIRED` (then the request is sent again: a string, Buffer or Uint8Array body
   * can be; a stream body cannot, and the 401 is thrown instead). Concurrent calls share one pass.
   * A fresh agent sends its first request (if its body can be sent again) before passing, since the
   * identity may hold a grant already (another process passed); the others wait for its answer.
   * Resolves with the upstream's response, whatever its status; rejects with a GateError for every
   * refusal of the gate itself (problem+json with an `AOG_*` code), a failed pass included.
   */
  fetch (path: string, init?: FetchInit): Promise<FetchResponse>
  close (): Promise<void>
}

/** An error answer from the gate (problem+json), or a transport failure (status 0). */
export class GateError extends Error {
  /** `problem`: the gate's problem+json body, when it sent one. */
  constructor (readonly status: number, readonly code: string, detail: string, readonly retryAfter?: number, readonly problem?: Record<string, unknown>) {
    super(`${status} ${code}: ${detail}`)
    this.name = 'GateError'
  }
}

/** Fingerprint F of a PEM certificate (docs/protocol.md section 1). */
export function certificateFingerprint (pem: string | Buffer): string {
  return fingerprintOf(new X509Certificate(pem).raw)
}

/** Create an agent bound to one gate and one client certificate. */
export function createAgent (opts: AgentOptions): AogAgent {
  if (opts.signing === undefined && (opts.cert === undefined || opts.key === undefined)) throw new TypeError('createAgent needs cert and key, or signing')
  const tls = new Agent({
    connections: opts.connections ?? 8,
    connect: {
      ...(opts.signing === undefined ? { cert: opts.cert, key: opts.key } : {}),
      ...(opts.ca === undefined ? {} : { ca: opts.ca }),
      minVersion: 'TLSv1.2',
    },
  })
  const signing = opts.signing === undefined ? undefined : signingKey(opts.signing)
  const dispatcher: Dispatcher = signing === undefined ? tls : tls.compose(signer(signing))
  // Protected requests go through the same connections, with the gate's own refusals turned into GateErrors.
  const gated = dispatcher.compose(gateProblems)
  const access: Access = { grant: 'unknown', renewAt: undefined, requests: null, generation: 0, step: undefined, probe: undefined, now: opts.now ?? Date.now, attestation: opts.attestation }
  const agent: AogAgent = {
    url: opts.url.replace(/\/+$/, ''),
    fingerprint: signing === undefined ? certificateFingerprint(opts.cert!) : signing.fingerprint,
    dispatcher,
    fetch: async (path, init) => await protectedFetch(agent, access, gated, path, init ?? {}),
    close: async () => { await dispatcher.close() },
  }
  accesses.set(agent, access)
  return agent
}

interface SigningKey { key: KeyObject, directoryUrl: string, validitySeconds: number, fingerprint: string }

function signingKey (o: NonNullable<AgentOptions['signing']>): SigningKey {
  const key = o.key instanceof KeyObject ? o.key : createPrivateKey(o.key)
  if (key.asymmetricKeyType !== 'ed25519') throw new TypeError('the signing key must be an Ed25519 private key')
  const fingerprint = Buffer.from(keyThumbprint(createPublicKey(key)), 'base64url').toString('hex')
  return { key, directoryUrl: o.directoryUrl, validitySeconds: o.validitySeconds ?? 60, fingerprint }
}

/** An interceptor that signs every request it dispatches (a fresh signature and nonce each time, retries included). */
function signer (k: SigningKey): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (options, handler) => {
    const origin = new URL(String(options.origin))
    const sig = signRequest({ method: options.method, authority: origin.host, target: options.path }, k)
    const h = options.headers ?? {}
    let headers: Dispatcher.DispatchOptions['headers']
    if (Array.isArray(h)) headers = [...(h as string[]), ...Object.entries(sig).flat()]
    else if (typeof (h as Iterable<unknown>)[Symbol.iterator] === 'function') headers = [...[...(h as Iterable<[string, string]>)].flat(), ...Object.entries(sig).flat()]
    else headers = { ...(h as Record<string, string>), ...sig }
    return dispatch({ ...options, headers }, handler)
  }
}

/**
 * Send; when the connection was closed before any answer, send once more, on another connection
 * (undici's request() resolves at the response headers, so a later failure is not seen here).
 * Closed means reset (ECONNRESET, EPIPE) or closed by the other side (undici's UND_ERR_SOCKET),
 * typically a kept-alive connection the server closed as the request went out; not a timeout or an
 * abort: then the server may be working on it.
 */
async function resending<T> (send: () => Promise<T>, resend: boolean): Promise<{ value: T, resent: unknown }> {
  try {
    return { value: await send(), resent: undefined }
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code
    if (!resend || (code !== 'ECONNRESET' && code !== 'EPIPE' && code !== 'UND_ERR_SOCKET')) throw err
    return { value: await send(), resent: err }
  }
}

async function call (agent: AogAgent, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
  // GET /challenge is safe to send twice. POST /task too: the gate claims a nonce at most once
  // (docs/protocol.md section 4), so a resent submission it had in fact received is refused 409,
  // never verified or accepted twice; that 409 says so below.
  const init = body === undefined ? { method } : { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
  const { value: res, resent } = await resending(async () => await request(agent.url + path, { ...init, dispatcher: agent.dispatcher }), method === 'GET' || path === '/task')
  const text = await res.body.text()
  if (res.statusCode === 200) {
    try { return JSON.parse(text) } catch { return undefined }
  }
  const problem = jsonObject(text)
  const code = problem?.code as string | undefined
  let detail = (problem?.detail as string | undefined) ?? text.slice(0, 200)
  if (resent !== undefined && code === 'AOG_NONCE_CONSUMED') detail += ` (resent after the connection closed: ${(resent as Error).message}; the first submission reached the gate, its outcome is unknown)`
  throw new GateError(res.statusCode, code ?? 'UNKNOWN', detail, retryAfterOf(res.headers['retry-after']), problem)
}

function retryAfterOf (v: string | string[] | undefined): number | undefined {
  const n = Number(v)
  return typeof v === 'string' && v !== '' && Number.isFinite(n) ? n : undefined
}

/** The JSON object `text` holds, else undefined. */
function jsonObject (text: string): Record<string, unknown> | undefined {
  let v: unknown
  try { v = JSON.parse(text) } catch { return undefined }
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : undefined
}

/** GET /challenge. */
export async function getChallenge (agent: AogAgent): Promise<ChallengeResponse> {
  const c = await call(agent, 'GET', '/challenge')
  if (!isChallengeResponse(c)) throw new GateError(200, 'AOG_CLIENT_BAD_CHALLENGE', 'the gate answered with a malformed challenge')
  if (c.algorithm !== ALGORITHM) throw new GateError(200, 'AOG_CLIENT_BAD_CHALLENGE', `unsupported algorithm ${String(c.algorithm)}`)
  return c
}

function roundMs (ms: number): number {
  return Math.round(ms * 1000) / 1000
}

/**
 * Solve a challenge for identity `fingerprint`: the complete POST /task body, with the measured
 * runtime, every checkpoint and the trace hash. Synchronous, with the fastest chain available
 * (native where built, else TypeScript).
 */
export function solve (challenge: ChallengeResponse, fingerprint: string, impl: ChainImpl = bestChain()): TaskBody {
  const t0 = performance.now()
  const s = solveChain(challenge, fingerprint, impl)
  return { nonce: challenge.nonce, ...s, runtime_ms: roundMs(performance.now() - t0), client_fingerprint: fingerprint }
}

/**
 * solve(), off the event loop: the whole chain in one native call on the libuv thread pool where
 * the addon is built (so an agent can keep many challenges in flight), else the same as solve().
 */
export async function solveAsync (challenge: ChallengeResponse, fingerprint: string): Promise<TaskBody> {
  const { addon } = loadNative()
  if (addon === undefined) return solve(challenge, fingerprint)
  const t0 = performance.now()
  checkShape(challenge.iterations, challenge.checkpoint_interval)
  const h0 = initialDigest(challenge.seed, challenge.nonce, fingerprint)
  const all = await addon.chainAsync(h0, chainKey(h0), challenge.iterations, challenge.checkpoint_interval)
  const raw: Buffer[] = []
  for (let i = 0; i < all.length; i += 32) raw.push(all.subarray(i, i + 32))
  return {
    nonce: challenge.nonce,
    result_hash: raw[raw.length - 1]!.toString('hex'),
    runtime_ms: roundMs(performance.now() - t0),
    client_fingerprint: fingerprint,
    trace_hash: traceHash(raw).toString('hex'),
    checkpoints: raw.map((c) => c.toString('hex')),
  }
}

/** POST /task. The grant it earns is remembered for agent.fetch. */
export async function submitTask (agent: AogAgent, body: TaskBody): Promise<TaskResponse> {
  const r = await call(agent, 'POST', '/task', body) as TaskResponse
  const access = accesses.get(agent)
  if (access !== undefined) recordGrant(access, (r as Partial<TaskResponse>).grant)
  return r
}

/**
 * One whole round: challenge, solve (off the event loop where the native chain is built), attest
 * (when the agent was given an attestation provider: in parallel with the solving), submit.
 */
export async function pass (agent: AogAgent, impl?: ChainImpl): Promise<TaskResponse & { runtime_ms: number }> {
  const c = await getChallenge(agent)
  const attestation = accesses.get(agent)?.attestation?.(c, agent.fingerprint)
  // Settled either way before anything is thrown, so that a failed solve leaves no rejection unhandled.
  attestation?.catch(() => {})
  const body = impl === undefined ? await solveAsync(c, agent.fingerprint) : solve(c, agent.fingerprint, impl)
  if (attestation !== undefined) body.attestation = await attestation
  const r = await submitTask(agent, body)
  return { ...r, runtime_ms: body.runtime_ms }
}

// ---- Protected requests (docs/protocol.md section 7) ------------------------------------------

/**
 * What the agent believes about its grant. `unknown`: nothing learned yet (another process with the
 * same identity may hold a live grant, so a replayable request is tried before passing); `live`: a
 * pass or an allowed request says there is one; `stale`: the gate said there is none.
 */
interface Access {
  grant: 'unknown' | 'live' | 'stale'
  /** When to re-pass (epoch ms), shortly before the grant expires; undefined when not known (then only a 401 says it is over). */
  renewAt: number | undefined
  /** Requests left on the grant, counted down per request; null when unlimited or unknown. */
  requests: number | null
  /** Bumped by every pass: a 401 for a request sent under an older grant does not pass again. */
  generation: number
  /** The pass (or first request, see ready) in flight, which every other request waits for. */
  step: Promise<void> | undefined
  /** The step when it is a probe (see ready). */
  probe: Promise<void> | undefined
  now: () => number
  attestation: AttestationProvider | undefined
}

const accesses = new WeakMap<AogAgent, Access>()

function recordGrant (a: Access, grant: TaskResponse['grant'] | undefined): void {
  a.generation++
  a.grant = 'live'
  // Re-pass when less than 10% of the ttl or 5 s is left, whichever is more, but at most half the ttl.
  // A gate without grants, or a clock so far ahead that the grant looks over: rely on the 401.
  const ttl = grant === undefined ? 0 : grant.expires_at - a.now()
  a.renewAt = ttl > 0 ? grant!.expires_at - Math.min(Math.max(ttl / 10, 5000), ttl / 2) : undefined
  a.requests = grant?.requests ?? null
}

/** Install `p` as the shared step; it is cleared when it settles. */
function share (a: Access, p: Promise<void>): Promise<void> {
  const s = p.finally(() => { if (a.step === s) a.step = undefined })
  a.step = s
  return s
}

/** A request sent while the grant is unknown: the others wait until it tells whether one is held. */
interface Probe { step: Promise<void>, release: (next?: Promise<void>) => void }

/** Passes a single fetch may wait for before it sends anyway and lets the gate judge. */
const MAX_PASSES = 3

/**
 * How long the others wait for a probe. The gate refuses a request without a grant at once, so a
 * probe still out after this was let through to a slow upstream: the others pass (one shared pass)
 * instead of waiting for its answer.
 */
const PROBE_WAIT_MS = 1000

/** Whether `step` settled within `ms` (a failed step rejects). */
async function settlesWithin (step: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([step.then(() => true), new Promise<boolean>((resolve) => { timer = setTimeout(resolve, ms, false) })])
  } finally {
    clearTimeout(timer)
  }
}

/** Pass, as the shared step. */
async function sharedPass (agent: AogAgent, a: Access): Promise<void> {
  await share(a, pass(agent).then(() => {}))
}

/**
 * Make the grant believed live before a request: wait for a step in flight, pass (one shared pass)
 * when the grant is stale, expiring or spent, and count the request against the budget. With no
 * knowledge yet, a replayable request goes first as the probe.
 */
async function ready (agent: AogAgent, a: Access, probe: boolean): Promise<{ generation: number, probe?: Probe }> {
  for (let passes = 0; ;) {
    const current = a.step
    if (current !== undefined) {
      if (current !== a.probe) await current
      else if (!await settlesWithin(current, PROBE_WAIT_MS) && a.step === current) {
        passes++
        await sharedPass(agent, a)
      }
      continue
    }
    if (a.grant === 'unknown' && probe) {
      let release!: (next?: Promise<void>) => void
      const step = share(a, new Promise<void>((resolve) => { release = (next) => { resolve(next) } }))
      step.catch(() => {}) // a failed pass reaches the probe and whoever waits, never unhandled
      a.probe = step
      return { generation: a.generation, probe: { step, release } }
    }
    const expiring = a.renewAt !== undefined && a.now() >= a.renewAt
    if ((a.grant !== 'live' || expiring || a.requests === 0) && passes < MAX_PASSES) {
      passes++
      await sharedPass(agent, a)
      continue
    }
    if (a.requests !== null && a.requests > 0) a.requests--
    return { generation: a.generation }
  }
}

async function protectedFetch (agent: AogAgent, a: Access, gated: Dispatcher, path: string, init: FetchInit): Promise<FetchResponse> {
  if (!path.startsWith('/')) throw new TypeError(`agent.fetch: the path must start with "/": ${path}`)
  const { body } = init
  const bodiless = body === undefined || body === null
  // A string, Buffer or Uint8Array body can be sent twice; a stream cannot.
  const again = bodiless || typeof body === 'string' || body instanceof Uint8Array
  // A GET or HEAD without a body is sent again when its connection was closed before any answer.
  const method = (init.method ?? 'GET').toUpperCase()
  const resend = bodiless && (method === 'GET' || method === 'HEAD')
  for (let retried = false; ; retried = true) {
    const r = await ready(agent, a, again && !retried)
    let res: FetchResponse
    try {
      res = (await resending(async () => await request(agent.url + path, { ...init, dispatcher: gated }), resend)).value
    } catch (err) {
      const noGrant = err instanceof GateError && err.code === 'AOG_GRANT_REQUIRED'
      if (r.probe !== undefined) {
        // No grant: pass (the others wait for it, unless they already passed), then send again.
        // Anything else says nothing about the grant.
        const next = noGrant && a.generation === r.generation ? a.step === r.probe.step ? sharedPass(agent, a) : a.step : undefined
        r.probe.release(next)
        if (!noGrant) throw err
        await next
        continue
      }
      // Only a 401 under the current grant makes it stale: later ones were sent before the new pass.
      if (noGrant && a.generation === r.generation && a.grant === 'live') a.grant = 'stale'
      if (noGrant && !retried && again) continue
      throw err
    }
    if (r.probe !== undefined) {
      // Allowed without a pass of ours: a grant is held, its expiry and budget unknown.
      if (a.grant === 'unknown') { a.grant = 'live'; a.renewAt = undefined; a.requests = null }
      r.probe.release()
    }
    return res
  }
}

/** Largest problem body taken as the gate's (its own are a few hundred bytes). */
const PROBLEM_MAX_BYTES = 64 * 1024

/**
 * A dispatch handler that holds back every problem+json error response until its end: when it is
 * the gate's own refusal (an `AOG_*` code) the request fails with a GateError, else the response is
 * handed on unchanged (the upstream's own problems are the caller's to read).
 */
class GateProblemHandler implements Dispatcher.DispatchHandler {
  readonly #next: Dispatcher.DispatchHandler
  #held: { status: number, headers: Record<string, string | string[] | undefined>, message: string | undefined, chunks: Buffer[], bytes: number } | undefined

  constructor (next: Dispatcher.DispatchHandler) {
    this.#next = next
  }

  onRequestStart (c: Dispatcher.DispatchController, context: unknown): void {
    this.#held = undefined
    this.#next.onRequestStart?.(c, context)
  }

  onResponseStart (c: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>, message?: string): void {
    const type = headers['content-type']
    const length = Number(headers['content-length'] ?? 0)
    if (status >= 400 && typeof type === 'string' && /^application\/problem\+json\s*(;|$)/i.test(type) && !(length > PROBLEM_MAX_BYTES)) {
      this.#held = { status, headers, message, chunks: [], bytes: 0 }
      return
    }
    this.#next.onResponseStart?.(c, status, headers, message)
  }

  onResponseData (c: Dispatcher.DispatchController, chunk: Buffer): void {
    const held = this.#held
    if (held === undefined) { this.#next.onResponseData?.(c, chunk); return }
    held.chunks.push(chunk)
    held.bytes += chunk.length
    if (held.bytes > PROBLEM_MAX_BYTES) this.#release(c) // too large to be the gate's
  }

  onResponseEnd (c: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    const held = this.#held
    if (held !== undefined) {
      const p = jsonObject(Buffer.concat(held.chunks).toString('utf8'))
      if (p !== undefined && typeof p.code === 'string' && /^AOG_[A-Z0-9_]+$/.test(p.code)) {
        this.#held = undefined
        this.#next.onResponseError?.(c, new GateError(held.status, p.code, typeof p.detail === 'string' ? p.detail : '', retryAfterOf(held.headers['retry-after']), p))
        return
      }
      this.#release(c)
    }
    this.#next.onResponseEnd?.(c, trailers)
  }

  onResponseError (c: Dispatcher.DispatchController, err: Error): void {
    this.#held = undefined
    this.#next.onResponseError?.(c, err)
  }

  /** Hand on a held response: its start and the body so far. */
  #release (c: Dispatcher.DispatchController): void {
    const held = this.#held!
    this.#held = undefined
    this.#next.onResponseStart?.(c, held.status, held.headers, held.message)
    for (const chunk of held.chunks) this.#next.onResponseData?.(c, chunk)
  }
}

const gateProblems: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) => dispatch(opts, new GateProblemHandler(handler))
