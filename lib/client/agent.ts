/**
 * The agent library: fetch a challenge, solve it, submit it, over mTLS with undici.
 *
 *   const agent = createAgent({ url, cert, key, ca })
 *   const result = await pass(agent)      // one whole round
 *   await agent.close()
 *
 * `solve(challenge, fingerprint)` is usable on its own by any program: it returns the complete
 * POST /task body (checkpoints and trace hash included).
 */
import { Agent, request } from 'undici'
import { X509Certificate } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { chainKey, initialDigest, solveChain, traceHash, type ChainImpl } from '../chain/chain.js'
import { ALGORITHM, checkShape } from '../protocol/constants.js'
import { bestChain } from '../chain/select.js'
import { loadNative } from '../chain/native.js'
import { fingerprintOf } from '../identity/tls.js'
import { isChallengeResponse, type ChallengeResponse, type TaskBody, type TaskResponse } from '../protocol/schemas.js'

export type { ChallengeResponse, TaskBody, TaskResponse }

export interface AgentOptions {
  /** Base URL of the gate, e.g. https://localhost:8443 */
  url: string
  /** Client certificate and key (PEM), and the CA that signed the gate's certificate. */
  cert: string | Buffer
  key: string | Buffer
  ca?: string | Buffer
  /** Connections kept to the gate (default 8). */
  connections?: number
}

export interface AogAgent {
  readonly url: string
  /** F of the client certificate. */
  readonly fingerprint: string
  readonly dispatcher: Agent
  close (): Promise<void>
}

/** An error answer from the gate (problem+json), or a transport failure (status 0). */
export class GateError extends Error {
  readonly status: number
  readonly code: string
  readonly retryAfter: number | undefined
  constructor (status: number, code: string, detail: string, retryAfter?: number) {
    super(`${status} ${code}: ${detail}`)
    this.name = 'GateError'
    this.status = status
    this.code = code
    this.retryAfter = retryAfter
  }
}

/** Fingerprint F of a PEM certificate (docs/protocol.md section 1). */
export function certificateFingerprint (pem: string | Buffer): string {
  return fingerprintOf(new X509Certificate(pem).raw)
}

/** Create an agent bound to one gate and one client certificate. */
export function createAgent (opts: AgentOptions): AogAgent {
  const dispatcher = new Agent({
    connections: opts.connections ?? 8,
    connect: { cert: opts.cert, key: opts.key, ...(opts.ca === undefined ? {} : { ca: opts.ca }), minVersion: 'TLSv1.2' },
  })
  return {
    url: opts.url.replace(/\/+$/, ''),
    fingerprint: certificateFingerprint(opts.cert),
    dispatcher,
    close: async () => { await dispatcher.close() },
  }
}

async function call (agent: AogAgent, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
  const res = await request(agent.url + path, {
    method,
    dispatcher: agent.dispatcher,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const text = await res.body.text()
  let json: unknown
  try { json = JSON.parse(text) } catch { json = undefined }
  if (res.statusCode !== 200) {
    const p = (json ?? {}) as { code?: string, detail?: string }
    const ra = res.headers['retry-after']
    throw new GateError(res.statusCode, p.code ?? 'UNKNOWN', p.detail ?? text.slice(0, 200), ra === undefined ? undefined : Number(ra))
  }
  return json
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

/** POST /task. */
export async function submitTask (agent: AogAgent, body: TaskBody): Promise<TaskResponse> {
  return await call(agent, 'POST', '/task', body) as TaskResponse
}

/** One whole round: challenge, solve (off the event loop where the native chain is built), submit. */
export async function pass (agent: AogAgent, impl?: ChainImpl): Promise<TaskResponse & { runtime_ms: number }> {
  const c = await getChallenge(agent)
  const body = impl === undefined ? await solveAsync(c, agent.fingerprint) : solve(c, agent.fingerprint, impl)
  const r = await submitTask(agent, body)
  return { ...r, runtime_ms: body.runtime_ms }
}
