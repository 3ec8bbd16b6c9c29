/**
 * The Redis Store (single node, Sentinel, Cluster) for several gate instances. Every operation is
 * one preloaded Lua script from lua/ (EVALSHA through ioredis defineCommand, which falls back to
 * EVAL on NOSCRIPT, so a Redis restart or SCRIPT FLUSH costs one extra round trip and no failed
 * request), atomic and one round trip. All keys of one identity carry the hash tag {F}, so each
 * script touches one slot and runs unchanged on Redis Cluster. Time comes from Redis TIME.
 *
 * Fail closed: no offline queue (a command while disconnected fails at once), a command timeout
 * (a stalled Redis fails within it), every failure surfaces as a StoreOpError naming the operation
 * (503), and ioredis reconnects by itself, reloading the scripts on every (re)connection. Where it
 * cannot (an ended client after a Sentinel failover, a frozen socket), the store replaces the client.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Cluster, Redis, type ChainableCommander, type RedisOptions } from 'ioredis'
import { StoreUnavailableError } from '../errors.js'
import { packageRoot } from '../paths.js'
import type {
  AuthorizeRequest, AuthorizeResult, BindRequest, BindResult, ChallengeRecord, ConsumeRequest, ConsumeResult, IssueRequest, IssueResult, OnceKey, RateState,
  Store, StoreHealth, StoreOp, StoreState, TakeRequest, TakeResult,
} from './store.js'
import { AuthorizeStatus, BindStatus, ConsumeStatus, IssueStatus, StoreOpError, TakeStatus, type Grant } from './store.js'
import { HEX64_SOURCE, NONCE_SOURCE } from '../protocol/constants.js'

interface HostPort { host: string, port: number }

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
  /** After a call that claimed a nonce or a once-key, WAIT for this many replicas (0: do not wait). */
  waitReplicas?: number
  waitTimeoutMs?: number
  /** An already-built client (ioredis-mock in unit tests). */
  client?: Redis | Cluster
  /** Called on connection errors (for the log); never with secrets. */
  onError?: (err: Error) => void
  /** Replace a client that has been unusable this long (ms; default 5000). Never an injected one. */
  replaceAfterMs?: number
  /** Called after a client was replaced, with the reason. */
  onReplace?: (reason: string) => void
  /** Called with every client the store adopts (the first and each replacement; tests). */
  onClient?: (client: Redis | Cluster) => void
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
type Client = (Redis | Cluster) & Record<ScriptName, (...args: Arg[]) => Promise<Reply>>

/** A script ready for defineCommand: its source with its includes, and the number of keys it takes. */
interface Script { lua: string, numberOfKeys: number }

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
  return Object.fromEntries(Object.entries(SCRIPTS).map(([name, file]) => [name, readScript(dir, file)])) as Record<ScriptName, Script>
}

const HEX64 = new RegExp(HEX64_SOURCE)
const NONCE = new RegExp(NONCE_SOURCE)
const ONCE = /^[0-9A-Za-z_-]{1,64}$/

export class RedisStore implements Store {
  readonly kind: string
  #client: Client
  readonly #prefix: string
  readonly #waitReplicas: number
  readonly #waitTimeoutMs: number
  readonly #scripts: Record<ScriptName, Script>
  readonly #opts: RedisStoreOptions
  /** Builds a fresh client (undefined for an injected one, which is never replaced). */
  readonly #make: (() => Redis | Cluster) | undefined
  readonly #replaceAfterMs: number
  readonly #timer: NodeJS.Timeout
  /** Since when every command failed (cleared by one that got a reply). */
  #failingSince: number | undefined
  /** Since when the client has not been ready (cleared when it is). */
  #notReadySince: number | undefined
  /** The Cluster client whose connections to the masters have all been ready (see #connected). */
  #mastersUp: Cluster | undefined
  #lastReplace = 0
  #replacements = 0
  #probing = false
  #closed = false

  constructor (opts: RedisStoreOptions) {
    this.#opts = opts
    this.#prefix = opts.prefix ?? 'aog:'
    this.#waitReplicas = opts.waitReplicas ?? 0
    this.#waitTimeoutMs = opts.waitTimeoutMs ?? 100
    this.#replaceAfterMs = opts.replaceAfterMs ?? 5000
    this.#scripts = loadScripts()
    const built = buildClient(opts)
    this.kind = built.kind
    this.#make = built.make
    this.#client = this.#adopt(opts.client ?? built.make!())
    this.#timer = setInterval(() => { this.#check() }, Math.min(250, Math.max(25, this.#replaceAfterMs / 4)))
    this.#timer.unref()
  }

  /** Scripts, listeners and state tracking for a new client; events of a replaced one are ignored. */
  #adopt (client: Redis | Cluster): Client {
    for (const [name, script] of Object.entries(this.#scripts)) client.defineCommand(name, script)
    client.on('error', (err: Error) => { if (client === this.#client) this.#opts.onError?.(err) })
    // Load the scripts eagerly on every (re)connection, so the first request after a Redis restart
    // is already an EVALSHA hit; NOSCRIPT is still handled by defineCommand if they vanish later.
    client.on('ready', () => {
      if (client !== this.#client) return
      this.#notReadySince = undefined
      void this.#preload(client)
    })
    for (const event of ['close', 'reconnecting', 'end']) {
      client.on(event, () => { if (client === this.#client) this.#notReadySince ??= Date.now() })
    }
    if (client.status !== 'ready') this.#notReadySince ??= Date.now()
    this.#opts.onClient?.(client)
    return client as Client
  }

  /**
   * Every 250 ms at most: replace a client that has been unusable for replaceAfterMs (since it went
   * down or since the last replacement), or at once one that ended (ioredis never reconnects
   * an ended client: the "Connection is closed." state a failover can leave it in); while
   * commands fail on a client that looks ready, probe it so that idleness does not hide it.
   */
  #check (): void {
    if (this.#closed) return
    const now = Date.now()
    const down = this.#downSince()
    if (down === undefined) return
    const status = this.#client.status
    const since = Math.max(down, this.#lastReplace)
    if (this.#make !== undefined && (now - since >= this.#replaceAfterMs || (status === 'end' && now - this.#lastReplace >= Math.min(1000, this.#replaceAfterMs)))) {
      this.#replace(status === 'end' ? 'client ended' : `unusable for ${now - down} ms`)
      return
    }
    if (status === 'ready' && this.#failingSince !== undefined && !this.#probing) {
      this.#probing = true
      this.ping().catch(() => {}).finally(() => { this.#probing = false })
    }
  }

  #replace (reason: string): void {
    const old = this.#client
    this.#lastReplace = Date.now()
    this.#replacements++
    this.#client = this.#adopt(this.#make!())
    // Its pending commands fail ("Connection is closed."); it stops reconnecting.
    old.disconnect()
    this.#opts.onReplace?.(reason)
  }

  #downSince (): number | undefined {
    const failing = this.#failingSince
    return failing === undefined ? this.#notReadySince : Math.min(failing, this.#notReadySince ?? failing)
  }

  /** The connection state, and since when (and after how many replacements) it has been unusable. */
  health (): StoreHealth {
    const status = this.#client.status
    let state: StoreState
    if (status === 'ready') state = !this.#connected() ? 'connecting' : this.#failingSince === undefined ? 'ready' : 'down'
    else if (status === 'reconnecting' || status === 'close') state = 'reconnecting'
    else if (status === 'end' || status === 'disconnecting') state = 'down'
    else state = 'connecting'
    return { state, downSince: this.#downSince(), replacements: this.#make === undefined ? undefined : this.#replacements }
  }

  /** Resolves once connected and the scripts are loaded (rejects after `timeoutMs`). */
  async ready (timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!this.#connected()) {
      if (Date.now() > deadline) throw new StoreUnavailableError('redis not ready')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await this.#preload(this.#client)
  }

  /**
   * The client is ready. A Cluster says so once it has the slot map, before its connections to the
   * masters are open (a command sent then fails): it is ready once those have all been, the first
   * time; after that a master that goes down costs its own slots only, not the whole gate's readiness.
   */
  #connected (): boolean {
    const c = this.#client
    if (c.status !== 'ready') return false
    if (!(c instanceof Cluster) || this.#mastersUp === c) return true
    if (!c.nodes('master').every((n) => n.status === 'ready')) return false
    this.#mastersUp = c
    return true
  }

  async #preload (client: Redis | Cluster): Promise<void> {
    const nodes = client instanceof Cluster ? client.nodes('master') : [client]
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

  /** The reply to a command sent for `op`, or a StoreOpError naming it. */
  async #call<T> (op: StoreOp, pending: Promise<T>): Promise<T> {
    try {
      const r = await pending
      this.#usable()
      return r
    } catch (err) {
      // A bug (a reply read wrongly) is not a store failure: it goes to the error path as itself.
      if (err instanceof TypeError) throw err
      // A reply that says the claim is not replicated: Redis answered, the client is fine.
      if (err instanceof ReplicaShortfall) this.#usable()
      else this.#failingSince ??= Date.now()
      throw new StoreOpError(op, `redis ${op} failed: ${(err as Error).message}`, err)
    }
  }

  /** A command got its reply: the store is usable again. */
  #usable (): void {
    this.#failingSince = undefined
    if (this.#notReadySince === undefined) this.#replacements = 0
  }

  async issue (req: IssueRequest): Promise<IssueResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#run('issue', 'aogIssue', [
      this.#key(req.fingerprint, 'b'), this.#challengeKey(req.fingerprint, req.nonce), onceKey,
      req.rate.burst, req.rate.perSecond, Buffer.from(req.seed, 'hex').toString('base64url'), req.iterations, req.checkpointInterval, req.deadlineMs, req.graceMs, onceTtl,
    ], onceClaimed(req.once, IssueStatus.REPLAYED, IssueStatus.RATE_LIMITED))
    const status = Number(r[0]) as IssueStatus
    const rate = rateOf(r, req.rate.burst)
    if (status !== IssueStatus.OK) return { status, rate }
    const { nonce, seed, fingerprint, iterations, checkpointInterval } = req
    return { status, rate, challenge: { nonce, seed, fingerprint, iterations, checkpointInterval, issuedAt: Number(r[4]), deadline: Number(r[5]) } }
  }

  async consume (req: ConsumeRequest): Promise<ConsumeResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const args = [this.#key(req.fingerprint, 'b'), this.#challengeKey(req.fingerprint, req.nonce), onceKey, req.rate.burst, req.rate.perSecond, onceTtl]
    const once = onceClaimed(req.once, ConsumeStatus.REPLAYED, ConsumeStatus.RATE_LIMITED)
    // A consume may claim its nonce, with or without a once-key: it always waits.
    const r = await this.#run('consume', 'aogConsume', args, (s) => s === ConsumeStatus.OK || s === ConsumeStatus.EXPIRED || once?.(s) === true)
    const status = Number(r[0]) as ConsumeStatus
    const rate = rateOf(r, req.rate.burst)
    if (status !== ConsumeStatus.OK && status !== ConsumeStatus.EXPIRED) return { status, rate }
    return { status, rate, now: Number(r[4]), challenge: parseRecord(String(r[5]), req.nonce, req.fingerprint) }
  }

  /**
   * Run `script` for `op`. With --redis-wait-replicas and a `claimed` test (undefined: the call
   * claims nothing, so it does not wait), WAIT follows in the same pipeline, and a reply whose
   * status `claimed` says wrote a claim fails unless enough replicas acknowledged it.
   */
  async #run (op: StoreOp, script: ScriptName, args: Arg[], claimed: ((status: number) => boolean) | undefined): Promise<Reply> {
    const pending = this.#waitReplicas === 0 || claimed === undefined ? this.#client[script](...args) : this.#claimReplicated(script, args, claimed)
    return await this.#call(op, pending)
  }

  /** The claim and WAIT in one pipeline: same connection (and node), one round trip. */
  async #claimReplicated (script: ScriptName, args: Arg[], claimed: (status: number) => boolean): Promise<Reply> {
    const p = this.#client.pipeline() as ChainableCommander & Record<ScriptName, (...a: Arg[]) => ChainableCommander>
    const res = await p[script](...args).wait(this.#waitReplicas, this.#waitTimeoutMs).exec()
    if (res === null) throw new Error('pipeline aborted')
    const [[e1, claim], [e2, acks]] = res as [[Error | null, Reply], [Error | null, number]]
    const err = e1 ?? e2
    if (err !== null) throw err
    if (claimed(Number(claim[0])) && Number(acks) < this.#waitReplicas) {
      // The claim may not survive a failover: refuse rather than risk a second accept.
      throw new ReplicaShortfall(`claim acknowledged by ${Number(acks)} of ${this.#waitReplicas} replicas`)
    }
    return claim
  }

  async bind (req: BindRequest): Promise<BindResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#call('bind', this.#client.aogBind(
      this.#challengeKey(req.fingerprint, req.nonce), this.#key(req.fingerprint, 'p'), this.#key(req.fingerprint, 'g'), onceKey,
      Math.max(1, Math.ceil(req.grant.ttlMs)), req.grant.maxRequests, onceTtl
    ))
    if (Number(r[0]) === BindStatus.REPLAYED) return { status: BindStatus.REPLAYED }
    return { status: BindStatus.OK, passes: Number(r[1]), grant: grantOf(r[2], r[3]) }
  }

  async authorize (req: AuthorizeRequest): Promise<AuthorizeResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#run('authorize', 'aogAuthorize', [
      this.#key(req.fingerprint, 'u'), this.#key(req.fingerprint, 'g'), onceKey, req.rate.burst, req.rate.perSecond, onceTtl,
    ], onceClaimed(req.once, AuthorizeStatus.REPLAYED, AuthorizeStatus.RATE_LIMITED))
    const status = Number(r[0]) as AuthorizeStatus
    const rate = rateOf(r, req.rate.burst)
    if (status !== AuthorizeStatus.OK) return { status, rate }
    return { status, rate, grant: grantOf(r[4], r[5]) }
  }

  async take (req: TakeRequest): Promise<TakeResult> {
    const [onceKey, onceTtl] = this.#onceArgs(req.fingerprint, req.once)
    const r = await this.#run('take', 'aogTake', [this.#key(req.fingerprint, 'b'), onceKey, req.rate.burst, req.rate.perSecond, onceTtl], onceClaimed(req.once, TakeStatus.REPLAYED, TakeStatus.RATE_LIMITED))
    return { status: Number(r[0]) as TakeStatus, rate: rateOf(r, req.rate.burst) }
  }

  async ping (): Promise<void> {
    const c = this.#client
    await this.#call<unknown>('ping', c instanceof Cluster ? Promise.all(c.nodes('master').map(async (n) => await n.ping())) : c.ping())
  }

  async close (): Promise<void> {
    this.#closed = true
    clearInterval(this.#timer)
    if (this.#make === undefined) return
    // QUIT lets pending replies arrive; disconnect() then stops any reconnection (to a Redis or a
    // Sentinel that is gone), so nothing keeps the process alive.
    try {
      await Promise.race([this.#client.quit(), new Promise((resolve) => setTimeout(resolve, 1000).unref())])
    } catch { /* already closed or unreachable */ }
    this.#client.disconnect()
  }
}

/** WAIT counted fewer replicas than required (Redis answered: not a connection failure). */
class ReplicaShortfall extends Error {}

/**
 * Whether a reply's status says the script claimed the once-key: with one, every status but
 * `replayed` (the key was there: nothing written) and `limited` (a 429 records no key). Undefined
 * without one.
 */
function onceClaimed (once: OnceKey | undefined, replayed: number, limited: number): ((status: number) => boolean) | undefined {
  if (once === undefined) return undefined
  return (status) => status !== replayed && status !== limited
}

/** The kind of store the options describe, and how to build its client (unless one was given). */
function buildClient (opts: RedisStoreOptions): { kind: string, make: (() => Redis | Cluster) | undefined } {
  if (opts.client !== undefined) return { kind: opts.client instanceof Cluster ? 'redis-cluster' : 'redis', make: undefined }
  const { cluster, sentinels } = opts
  const timeout = opts.commandTimeoutMs ?? 1000
  const backoff = (times: number): number => Math.min(50 * times, 1000)
  const common: RedisOptions = {
    enableOfflineQueue: false,
    commandTimeout: timeout,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(timeout, 1000),
    retryStrategy: backoff,
    lazyConnect: false,
  }
  if (cluster !== undefined && cluster.length > 0) {
    return {
      kind: 'redis-cluster',
      make: () => new Cluster(cluster, {
        enableOfflineQueue: false,
        clusterRetryStrategy: backoff,
        redisOptions: common,
        slotsRefreshTimeout: Math.max(timeout, 1000),
      }),
    }
  }
  if (sentinels !== undefined && sentinels.length > 0) {
    return {
      kind: 'redis-sentinel',
      make: () => new Redis({
        ...common,
        sentinels,
        name: opts.sentinelName ?? 'mymaster',
        sentinelRetryStrategy: backoff,
        // Follow a failover as soon as the Sentinels announce it, and drop a connection that
        // finds itself on a demoted master (the failing request gets 503; nothing is resent).
        failoverDetector: true,
        reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
      }),
    }
  }
  const url = opts.url ?? 'redis://127.0.0.1:6379'
  return { kind: 'redis', make: () => new Redis(url, common) }
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
