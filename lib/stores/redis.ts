/**
 * The Redis Store (single node, Sentinel, Cluster) for several gate instances. Every operation is
 * one preloaded Lua script from lua/ (EVALSHA through ioredis defineCommand, which falls back to
 * EVAL on NOSCRIPT, so a Redis restart or SCRIPT FLUSH costs one extra round trip and no failed
 * request), atomic and one round trip. All keys of one identity carry the hash tag {F}, so each
 * script touches one slot and runs unchanged on Redis Cluster. Time comes from Redis TIME.
 *
 * Fail closed: no offline queue (a command while disconnected fails at once), a command timeout
 * (a stalled Redis fails within it), every failure surfaces as StoreUnavailableError (503), and
 * ioredis reconnects by itself, reloading the scripts on every (re)connection.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Cluster, Redis, type ChainableCommander, type RedisOptions } from 'ioredis'
import { StoreUnavailableError } from '../errors.js'
import { packageRoot } from '../paths.js'
import type {
  AuthorizeRequest, AuthorizeResult, BindRequest, BindResult, ChallengeRecord, ConsumeRequest, ConsumeResult, IssueRequest, IssueResult, OnceKey, RateState,
  Store, TakeRequest, TakeResult,
} from './store.js'
import { AuthorizeStatus, BindStatus, ConsumeStatus, IssueStatus, TakeStatus, type Grant } from './store.js'
import { HEX64_SOURCE, NONCE_SOURCE } from '../protocol/constants.js'

export interface HostPort { host: string, port: number }

export interface RedisStoreOptions {
  /** redis://[user:pass@]host:port[/db] or rediss://… (single node). */
  url?: string | undefined
  /** Cluster seed nodes; when set, the store is a Redis Cluster client. */
  cluster?: HostPort[] | undefined
  /** Sentinels; when set, the master named `sentinelName` is found through them. */
  sentinels?: HostPort[] | undefined
  sentinelName?: string | undefined
  /** Key prefix (before the {F} hash tag). */
  prefix?: string
  commandTimeoutMs?: number
  /** After a claim, WAIT for this many replicas (0: do not wait). */
  waitReplicas?: number
  waitTimeoutMs?: number
  /** An already-built client (ioredis-mock in unit tests). */
  client?: Redis | Cluster
  /** Called on connection errors (for the log); never with secrets. */
  onError?: (err: Error) => void
}

/** The commands the store calls, and the script in lua/ that each one runs. */
const SCRIPTS = {
  aogIssue: 'issue.lua',
  aogConsume: 'consume.lua',
  aogBind: 'bind.lua',
  aogTake: 'take.lua',
  aogAuthorize: 'authorize.lua',
} as const

type ScriptName = keyof typeof SCRIPTS
type Arg = string | number | Buffer
type Reply = Array<string | number | Buffer | null>
type Client = (Redis | Cluster) & Record<ScriptName, (...args: Arg[]) => Promise<Reply | number>>

/** A script ready for defineCommand: its source with its includes, and the number of keys it takes. */
export interface Script { lua: string, numberOfKeys: number }

/**
 * Read one script and the header it opens with (its leading comment lines), BullMQ style:
 *   --- @keys N                    required once: the number of KEYS the script takes
 *   --- @include "includes/name"   optional: lua/includes/name.lua, prepended in order
 * Anything else that looks like a directive, a directive after the header, a key count that
 * differs from the highest KEYS[i] the script reads, or an include that is missing or has
 * directives of its own, throws: a broken script fails at load, not at its first request.
 */
export function readScript (dir: string, file: string): Script {
  const bad = (why: string): Error => new Error(`lua/${file}: ${why}`)
  const source = readFileSync(join(dir, file), 'utf8')
  const lines = source.split('\n')
  const header = lines.findIndex((l) => !l.startsWith('--') && l.trim() !== '')
  const includes: string[] = []
  let keys: number | undefined
  for (const [i, line] of lines.entries()) {
    if (!/^\s*---?\s*@/.test(line)) continue
    if (header >= 0 && i > header) throw bad(`line ${i + 1}: a directive after the header`)
    const m = /^--- @(keys|include) (.*)$/.exec(line)
    if (m === null) throw bad(`line ${i + 1}: not a directive this loader knows: ${line}`)
    const value = m[2]!
    if (m[1] === 'keys') {
      if (keys !== undefined) throw bad('@keys declared twice')
      if (!/^\d{1,2}$/.test(value)) throw bad(`@keys takes a number: ${value}`)
      keys = Number(value)
    } else {
      const name = /^"(includes\/[a-z0-9_-]+)"$/.exec(value)?.[1]
      if (name === undefined) throw bad(`@include takes "includes/<name>": ${value}`)
      if (includes.includes(name)) throw bad(`${name} included twice`)
      includes.push(name)
    }
  }
  if (keys === undefined) throw bad('no @keys in the header')
  const used = Math.max(0, ...[...source.matchAll(/KEYS\[(\d+)\]/g)].map((k) => Number(k[1])))
  if (used !== keys) throw bad(`@keys ${keys}, but the script reads KEYS[${used}]`)
  const parts = includes.map((name) => {
    let text: string
    try {
      text = readFileSync(join(dir, `${name}.lua`), 'utf8')
    } catch {
      throw bad(`${name}.lua cannot be read`)
    }
    if (/^\s*---?\s*@/m.test(text)) throw bad(`${name}.lua: an include takes no directives`)
    if (text.includes('KEYS[')) throw bad(`${name}.lua: an include reads no KEYS (its script passes them)`)
    return text
  })
  return { lua: [...parts, source].join('\n'), numberOfKeys: keys }
}

/** Every script the store calls, read once from `dir` (the package's lua/). */
export function loadScripts (dir = join(packageRoot(), 'lua')): Record<ScriptName, Script> {
  const out = {} as Record<ScriptName, Script>
  for (const [name, file] of Object.entries(SCRIPTS) as Array<[ScriptName, string]>) out[name] = readScript(dir, file)
  return out
}

const HEX64 = new RegExp(HEX64_SOURCE)
const NONCE = new RegExp(NONCE_SOURCE)
const ONCE = /^[0-9A-Za-z_-]{1,64}$/

export class RedisStore implements Store {
  readonly kind: string
  readonly #client: Client
  readonly #prefix: string
  readonly #waitReplicas: number
  readonly #waitTimeoutMs: number
  readonly #scripts: Record<ScriptName, Script>
  readonly #owned: boolean

  constructor (opts: RedisStoreOptions) {
    this.#prefix = opts.prefix ?? 'aog:'
    this.#waitReplicas = opts.waitReplicas ?? 0
    this.#waitTimeoutMs = opts.waitTimeoutMs ?? 100
    this.#scripts = loadScripts()
    const timeout = opts.commandTimeoutMs ?? 1000
    const common: RedisOptions = {
      enableOfflineQueue: false,
      commandTimeout: timeout,
      maxRetriesPerRequest: 0,
      connectTimeout: Math.max(timeout, 1000),
      retryStrategy: (times: number) => Math.min(50 * times, 1000),
      lazyConnect: false,
    }
    let client: Redis | Cluster
    if (opts.client !== undefined) {
      client = opts.client
      this.kind = opts.client instanceof Cluster ? 'redis-cluster' : 'redis'
    } else if (opts.cluster !== undefined && opts.cluster.length > 0) {
      client = new Cluster(opts.cluster, {
        enableOfflineQueue: false,
        clusterRetryStrategy: (times: number) => Math.min(50 * times, 1000),
        redisOptions: common,
        slotsRefreshTimeout: Math.max(timeout, 1000),
      })
      this.kind = 'redis-cluster'
    } else if (opts.sentinels !== undefined && opts.sentinels.length > 0) {
      client = new Redis({
        ...common,
        sentinels: opts.sentinels,
        name: opts.sentinelName ?? 'mymaster',
        sentinelRetryStrategy: (times: number) => Math.min(50 * times, 1000),
        // Follow a failover as soon as the Sentinels announce it, and drop a connection that
        // finds itself on a demoted master (the failing request gets 503; nothing is resent).
        failoverDetector: true,
        reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
      })
      this.kind = 'redis-sentinel'
    } else {
      client = new Redis(opts.url ?? 'redis://127.0.0.1:6379', common)
      this.kind = 'redis'
    }
    this.#owned = opts.client === undefined
    for (const [name, script] of Object.entries(this.#scripts)) client.defineCommand(name, script)
    client.on('error', (err: Error) => opts.onError?.(err))
    // Load the scripts eagerly on every (re)connection, so the first request after a Redis restart
    // is already an EVALSHA hit; NOSCRIPT is still handled by defineCommand if they vanish later.
    client.on('ready', () => { void this.#preload() })
    this.#client = client as Client
  }

  /** Resolves once connected and the scripts are loaded (rejects after `timeoutMs`). */
  async ready (timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while ((this.#client as Redis).status !== 'ready') {
      if (Date.now() > deadline) throw new StoreUnavailableError('redis not ready')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await this.#preload()
  }

  async #preload (): Promise<void> {
    const nodes = this.#client instanceof Cluster ? this.#client.nodes('master') : [this.#client as Redis]
    try {
      await Promise.all(nodes.flatMap((n) => Object.values(this.#scripts).map(async (s) => await n.script('LOAD', s.lua))))
    } catch {
      // Not fatal: EVALSHA falls back to EVAL on NOSCRIPT.
    }
  }

  /** aog:{F}:<kind><id>, F in base64url (43 characters rather than 64: smaller keys, same tag). */
  #key (fingerprint: string, kind: string, id = ''): string {
    if (!HEX64.test(fingerprint)) throw new TypeError('fingerprint must be 64 lowercase hex')
    return `${this.#prefix}{${Buffer.from(fingerprint, 'hex').toString('base64url')}}:${kind}${id}`
  }

  #challengeKey (fingerprint: string, nonce: string): string {
    if (!NONCE.test(nonce)) throw new TypeError('malformed nonce')
    return this.#key(fingerprint, 'c:', nonce)
  }

  #onceArgs (fingerprint: string, once: OnceKey | undefined): [string, number] {
    if (once === undefined) return [this.#key(fingerprint, 'o'), 0]
    if (!ONCE.test(once.id)) throw new TypeError('malformed once id')
    return [this.#key(fingerprint, 'o:', once.id), Math.max(1, Math.ceil(once.ttlMs))]
  }

  async #call<T> (op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      if (err instanceof TypeError) throw err
      throw new StoreUnavailableError(`redis ${op} failed: ${(err as Error).message}`, err)
    }
  }

  async issue (req: IssueRequest): Promise<IssueResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#call('issue', async () => await this.#client.aogIssue(
      this.#key(req.fingerprint, 'b'), this.#challengeKey(req.fingerprint, req.nonce), onceKey,
      req.rate.burst, req.rate.perSecond, Buffer.from(req.seed, 'hex').toString('base64url'), req.iterations, req.checkpointInterval, req.deadlineMs, req.graceMs, onceTtl
    ) as Reply)
    const status = Number(r[0]) as IssueStatus
    const rate = rateOf(r, req.rate.burst)
    if (status !== IssueStatus.OK) return { status: status as IssueStatus.RATE_LIMITED, rate }
    return {
      status,
      rate,
      challenge: {
        nonce: req.nonce,
        seed: req.seed,
        fingerprint: req.fingerprint,
        iterations: req.iterations,
        checkpointInterval: req.checkpointInterval,
        issuedAt: Number(r[4]),
        deadline: Number(r[5]),
      },
    }
  }

  async consume (req: ConsumeRequest): Promise<ConsumeResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const args = [this.#key(req.fingerprint, 'b'), this.#challengeKey(req.fingerprint, req.nonce), onceKey, req.rate.burst, req.rate.perSecond, onceTtl]
    const r = await this.#call('consume', async () => {
      if (this.#waitReplicas === 0) return await this.#client.aogConsume(...args) as Reply
      // The claim and WAIT in one pipeline: same connection (and node), one round trip.
      const p = this.#client.pipeline() as ChainableCommander & Record<ScriptName, (...a: Arg[]) => ChainableCommander>
      const res = await p.aogConsume(...args).wait(this.#waitReplicas, this.#waitTimeoutMs).exec()
      if (res === null) throw new Error('pipeline aborted')
      const [[e1, claim], [e2, acks]] = res as Array<[Error | null, unknown]> as [[Error | null, Reply], [Error | null, number]]
      if (e1 !== null) throw e1
      if (e2 !== null) throw e2
      const status = Number(claim[0])
      if ((status === ConsumeStatus.OK || status === ConsumeStatus.EXPIRED) && Number(acks) < this.#waitReplicas) {
        // The claim may not survive a failover: refuse rather than risk a second accept.
        throw new Error(`claim acknowledged by ${Number(acks)} of ${this.#waitReplicas} replicas`)
      }
      return claim
    })
    const status = Number(r[0]) as ConsumeStatus
    const rate = rateOf(r, req.rate.burst)
    if (status !== ConsumeStatus.OK && status !== ConsumeStatus.EXPIRED) return { status: status as ConsumeStatus.UNKNOWN, rate }
    return { status, rate, now: Number(r[4]), challenge: parseRecord(String(r[5]), req.nonce, req.fingerprint) }
  }

  async bind (req: BindRequest): Promise<BindResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#call('bind', async () => await this.#client.aogBind(
      this.#challengeKey(req.fingerprint, req.nonce), this.#key(req.fingerprint, 'p'), this.#key(req.fingerprint, 'g'), onceKey,
      Math.max(1, Math.ceil(req.grant.ttlMs)), req.grant.maxRequests, onceTtl
    ) as Reply)
    if (Number(r[0]) === BindStatus.REPLAYED) return { status: BindStatus.REPLAYED }
    return { status: BindStatus.OK, passes: Number(r[1]), grant: grantOf(r[2], r[3]) }
  }

  async authorize (req: AuthorizeRequest): Promise<AuthorizeResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#call('authorize', async () => await this.#client.aogAuthorize(
      this.#key(req.fingerprint, 'u'), this.#key(req.fingerprint, 'g'), onceKey, req.rate.burst, req.rate.perSecond, onceTtl
    ) as Reply)
    const status = Number(r[0]) as AuthorizeStatus
    const rate = rateOf(r, req.rate.burst)
    if (status !== AuthorizeStatus.OK) return { status: status as AuthorizeStatus.NO_GRANT, rate }
    return { status, rate, grant: grantOf(r[4], r[5]) }
  }

  async take (req: TakeRequest): Promise<TakeResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#call('take', async () => await this.#client.aogTake(this.#key(req.fingerprint, 'b'), onceKey, req.rate.burst, req.rate.perSecond, onceTtl) as Reply)
    return { status: Number(r[0]) as TakeStatus, rate: rateOf(r, req.rate.burst) }
  }

  async ping (): Promise<void> {
    await this.#call('ping', async () => {
      if (this.#client instanceof Cluster) {
        await Promise.all(this.#client.nodes('master').map(async (n) => await n.ping()))
      } else {
        await this.#client.ping()
      }
    })
  }

  async close (): Promise<void> {
    if (!this.#owned) return
    // QUIT lets pending replies arrive; disconnect() then stops any reconnection (to a Redis or a
    // Sentinel that is gone), so nothing keeps the process alive.
    try {
      await Promise.race([this.#client.quit(), new Promise((resolve) => setTimeout(resolve, 1000).unref())])
    } catch { /* already closed or unreachable */ }
    this.#client.disconnect()
  }
}

/** The grant fields of a bind or authorize reply: expiry ms, requests left (-1: unlimited). */
function grantOf (expiry: unknown, left: unknown): Grant {
  const n = Number(left)
  return { expiresAt: Number(expiry), requests: n < 0 ? null : n }
}

function rateOf (r: Reply, burst: number): RateState {
  return { limit: burst, remaining: Number(r[1]), resetMs: Number(r[2]), retryAfterMs: Number(r[3]) }
}

/** "<state><issued at, 13 digits><deadline - issued at>:<iterations>:<m>:<seed b64url>" (lua/issue.lua). */
function parseRecord (rec: string, nonce: string, fingerprint: string): ChallengeRecord {
  const m = /^[0-2](\d{13})(\d+):(\d+):(\d+):([A-Za-z0-9_-]{43})$/.exec(rec)
  if (m === null) throw new Error('malformed challenge record')
  const issuedAt = Number(m[1])
  return {
    nonce,
    seed: Buffer.from(m[5]!, 'base64url').toString('hex'),
    fingerprint,
    iterations: Number(m[3]),
    checkpointInterval: Number(m[3]) / Number(m[4]),
    issuedAt,
    deadline: issuedAt + Number(m[2]),
  }
}
