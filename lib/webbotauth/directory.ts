/**
 * Signature-agent key directories (docs/protocol.md section 8): where the keys of Web Bot Auth
 * signatures come from.
 *
 * Only the directories the operator allows are read (`--signature-agents FILE`: one HTTPS URL per
 * line, or a URL and a local JWKS file pinned to it, read instead of the network). A URL whose path
 * is `/` (an origin, as `Signature-Agent` usually names it) stands for the draft's well-known
 * directory, `/.well-known/http-message-signatures-directory`, of that origin.
 *
 * A directory is fetched with undici: status 200 only (a redirect is refused, not followed), the body
 * bounded while it streams, the whole fetch under a timeout, a private CA trusted besides the
 * system's. Its body is a JWKS (`{"keys": [...]}`, media type
 * application/http-message-signatures-directory+json); its Ed25519 public keys are indexed by RFC
 * 7638 thumbprint (base64url), which is a signature's `keyid`. Other keys are skipped, and so are a
 * key published with its private part and a weak key (small order or non-canonical: anyone could sign
 * for it), each counted in the fetch's report. A directory that answers with no usable key has none
 * to trust: its keys held before are dropped (a removed last key is not served stale), every keyid
 * is unknown until it publishes one, and it is asked again after MIN_TTL_SECONDS whatever its
 * max-age (outcome 'empty'). A pinned file without one is an error (kept or refused).
 *
 * Keys are cached for the response's `Cache-Control: max-age`, clamped to [60 s, 1 day] (60 s when
 * absent). Past that, a lookup waits for a new fetch, one in flight per directory however many
 * lookups wait for it. When fetches fail, the keys held keep serving for at most a day after they
 * went stale, and the next attempt waits `retrySeconds`; a directory whose keys are unknown (never fetched,
 * or stale beyond the day) answers 'no-keys', which the verifier turns into 503 with Retry-After.
 * A key that is not in a fresh directory is unknown until the directory's cache expires: rotation
 * takes effect within max-age. refresh() fetches every directory again and re-reads pinned files
 * (SIGHUP, a change of the allow-list file).
 */
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isAbsolute, resolve as resolvePath } from 'node:path'
import { rootCertificates } from 'node:tls'
import type { Agent } from 'undici'
import { FetchError, fetchAgent, fetchJson, type FetchFailure } from '../bounded-fetch.js'
import { keyThumbprint, type KeyLookup } from './httpsig.js'
import { weakEd25519Key } from './ed25519.js'
import { textMemo } from './text-memo.js'

export const WELL_KNOWN_DIRECTORY = '/.well-known/http-message-signatures-directory'
export const DIRECTORY_MEDIA_TYPE = 'application/http-message-signatures-directory+json'
export const MIN_TTL_SECONDS = 60
export const MAX_TTL_SECONDS = 86_400
/** How long past their freshness keys serve while fetches fail. */
export const MAX_STALE_SECONDS = 86_400

/** One allowed directory: its URL, and a local JWKS file read instead of the network. */
export interface DirectoryAllow {
  url: string
  file?: string | undefined
}

/** How a fetch (or a pinned file's read) ended, as a metric label would say it. */
export type FetchOutcome = 'ok' | 'empty' | 'file' | FetchFailure

export interface FetchReport {
  outcome: FetchOutcome
  /** Usable keys, when it succeeded. */
  keys?: number
  /** Keys it skipped, by reason (describeSkipped), when it succeeded and skipped any. */
  skipped?: string
  /** The cache lifetime it was given (s), when it succeeded over the network. */
  ttlSeconds?: number
  /** The HTTP status, when one came. */
  status?: number
  /** What went wrong (never key material or the body). */
  detail?: string
  ms: number
}

export interface KeyDirectoriesOptions {
  allow: readonly DirectoryAllow[]
  /** CA certificate(s), PEM, trusted besides the system's (a private directory's CA). */
  ca?: Buffer | string | undefined
  /** The whole fetch: connection, headers and body. */
  timeoutMs: number
  /** Largest directory body accepted. */
  maxBytes: number
  /** After a failed fetch, lookups do not fetch again for this long (default 30 s). */
  retrySeconds?: number | undefined
  /** The clock, ms since the epoch (default Date.now). */
  now?: (() => number) | undefined
  /** Every fetch's (and pinned file read's) outcome, for metrics and the log. */
  onFetch?: ((url: string, report: FetchReport) => void) | undefined
}

export interface KeyDirectories {
  /** The allowed directory URLs, normalized. */
  readonly urls: readonly string[]
  /**
   * The key of `keyid` in the directory `url` names (as Signature-Agent sent it), or in any allowed
   * directory when `url` is undefined. Without a promise when the answer is known now (the
   * directory's keys are fresh): most requests.
   */
  resolve: (url: string | undefined, keyid: string) => KeyLookup | Promise<KeyLookup>
  /** Fetch every directory and re-read every pinned file now; resolves when all are done. */
  refresh: () => Promise<void>
  /** Abort fetches in flight and close the connections. */
  close: () => Promise<void>
}

/**
 * A directory URL in the form the allow list and lookups compare: HTTPS, no credentials, no fragment,
 * an origin standing for its well-known directory. Throws an Error saying what is wrong.
 */
export function normalizeDirectoryUrl (text: string): string {
  let u: URL
  try {
    u = new URL(text)
  } catch {
    throw new Error('is not a URL')
  }
  if (u.protocol !== 'https:') throw new Error('is not an https URL')
  if (u.username !== '' || u.password !== '') throw new Error('has credentials')
  if (u.hash !== '' || text.includes('#')) throw new Error('has a fragment')
  if (u.pathname === '/' && u.search === '') u.pathname = WELL_KNOWN_DIRECTORY
  return u.href
}

/** normalizeDirectoryUrl once per text a request sends (textMemo); null: not a directory URL. */
const normalized = textMemo(256, (text: string): string | null => {
  try {
    return normalizeDirectoryUrl(text)
  } catch {
    return null
  }
})

/**
 * The allow list of `--signature-agents FILE`: one entry per line, `URL` or `URL FILE` (a JWKS file
 * pinned to the URL, relative to `baseDir` when given), `#` comments and blank lines ignored. Throws
 * an Error naming the line for anything else, a repeated URL, or a file with no entry.
 */
export function parseSignatureAgentsFile (text: string, opts: { baseDir?: string, source?: string } = {}): DirectoryAllow[] {
  const source = opts.source ?? 'signature agents file'
  const out: DirectoryAllow[] = []
  const lineOf = new Map<string, number>()
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1
    let line = lines[i]!
    const hash = line.search(/(^|\s)#/)
    if (hash >= 0) line = line.slice(0, hash)
    line = line.trim()
    if (line === '') continue
    const fields = line.split(/\s+/)
    if (fields.length > 2) throw new Error(`${source} line ${n}: expected "URL" or "URL FILE", found ${fields.length} fields`)
    let url: string
    try {
      url = normalizeDirectoryUrl(fields[0]!)
    } catch (err) {
      throw new Error(`${source} line ${n}: the directory URL ${(err as Error).message}`)
    }
    const seen = lineOf.get(url)
    if (seen !== undefined) throw new Error(`${source} line ${n}: ${url} is already allowed on line ${seen}`)
    lineOf.set(url, n)
    const file = fields[1]
    out.push(file === undefined ? { url } : { url, file: opts.baseDir !== undefined && !isAbsolute(file) ? resolvePath(opts.baseDir, file) : file })
  }
  if (out.length === 0) throw new Error(`${source}: no directory URL`)
  return out
}

/** A base64url Ed25519 public key: 32 bytes, 43 characters. */
const ED25519_X = /^[A-Za-z0-9_-]{43}$/

/** Why a directory's key was skipped, as the fetch report counts them. */
export type SkipReason = 'not an Ed25519 public key' | 'private part published' | 'not for signatures' | 'weak (small order or not canonical)'

/**
 * The usable keys of a directory body (see the module comment), by thumbprint. A key already held in
 * `previous` is reused, so that its parsed KeyObject (and its cached thumbprint) lives on. Each
 * skipped key is counted in `skipped` by its reason. None usable is an empty map: the directory's
 * answer that it has no key to trust.
 */
export function directoryKeys (doc: unknown, previous?: ReadonlyMap<string, KeyObject>, skipped = new Map<SkipReason, number>()): Map<string, KeyObject> {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) throw new Error('not a JWKS (no "keys" array)')
  const keys = new Map<string, KeyObject>()
  const skip = (reason: SkipReason): void => { skipped.set(reason, (skipped.get(reason) ?? 0) + 1) }
  for (const k of (doc as { keys: unknown[] }).keys) {
    const j = (typeof k === 'object' && k !== null && !Array.isArray(k) ? k : {}) as Record<string, unknown>
    if (j.kty !== 'OKP' || j.crv !== 'Ed25519' || typeof j.x !== 'string' || !ED25519_X.test(j.x)) { skip('not an Ed25519 public key'); continue }
    if (j.d !== undefined) { skip('private part published'); continue }
    if ((j.use !== undefined && j.use !== 'sig') || (j.alg !== undefined && j.alg !== 'EdDSA' && j.alg !== 'Ed25519')) { skip('not for signatures'); continue }
    if (weakEd25519Key(Buffer.from(j.x, 'base64url'))) { skip('weak (small order or not canonical)'); continue }
    let key: KeyObject
    try {
      key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: j.x }, format: 'jwk' })
    } catch {
      skip('not an Ed25519 public key')
      continue
    }
    const thumbprint = keyThumbprint(key)
    keys.set(thumbprint, previous?.get(thumbprint) ?? key)
  }
  return keys
}

/** "2 private part published, 1 weak (…)": the skipped keys of a directory, for the log. */
export function describeSkipped (skipped: ReadonlyMap<SkipReason, number>): string {
  return [...skipped].map(([reason, n]) => `${n} ${reason}`).join(', ')
}

function skippedField (skipped: ReadonlyMap<SkipReason, number>): { skipped?: string } {
  return skipped.size === 0 ? {} : { skipped: describeSkipped(skipped) }
}

/** The cache lifetime of a response (s): its max-age clamped to [MIN_TTL_SECONDS, MAX_TTL_SECONDS]. */
export function cacheSeconds (cacheControl: string | readonly string[] | undefined): number {
  let maxAge: number | undefined
  const text = typeof cacheControl === 'string' ? cacheControl : cacheControl?.join(',') ?? ''
  for (const part of text.split(',')) {
    const [name, value] = part.trim().split('=', 2)
    const directive = name!.toLowerCase()
    if (directive === 'no-store' || directive === 'no-cache') maxAge = 0
    else if (directive === 'max-age' && value !== undefined) {
      const v = value.replace(/^"(.*)"$/, '$1')
      if (/^\d{1,10}$/.test(v)) maxAge = Math.min(maxAge ?? Infinity, Number(v))
    }
  }
  return Math.min(MAX_TTL_SECONDS, Math.max(MIN_TTL_SECONDS, maxAge ?? MIN_TTL_SECONDS))
}

interface Entry {
  url: string
  file: string | undefined
  keys: Map<string, KeyObject> | undefined
  /** Keys are fresh until then (ms); pinned files' never go stale. */
  freshUntil: number
  /** When the last fetch failed (ms). */
  failedAt: number
  inflight: Promise<void> | undefined
}

export function createKeyDirectories (opts: KeyDirectoriesOptions): KeyDirectories {
  const now = opts.now ?? Date.now
  const { timeoutMs, maxBytes, onFetch } = opts
  const retryMs = (opts.retrySeconds ?? 30) * 1000
  const entries = new Map<string, Entry>()
  // Reported once the whole list is accepted: a list refused at a later entry loaded nothing.
  const pinnedReads: Array<[string, FetchReport]> = []
  for (const a of opts.allow) {
    const url = normalizeDirectoryUrl(a.url)
    if (entries.has(url)) throw new Error(`signature agent ${url} is allowed twice`)
    const e: Entry = { url, file: a.file, keys: undefined, freshUntil: Number.NEGATIVE_INFINITY, failedAt: Number.NEGATIVE_INFINITY, inflight: undefined }
    if (a.file !== undefined) {
      // A pinned file is read now: a broken one stops the start, with its name and the reason.
      try {
        pinnedReads.push([url, readPinned(e, a.file)])
      } catch (err) {
        throw new Error(`signature agent ${url}: file ${a.file}: ${(err as Error).message}`)
      }
      e.freshUntil = Number.POSITIVE_INFINITY
    }
    entries.set(url, e)
  }
  for (const [url, report] of pinnedReads) onFetch?.(url, report)
  const closing = new AbortController()
  let dispatcher: Agent | undefined

  function client (): Agent {
    // A private CA is trusted besides the system's.
    dispatcher ??= fetchAgent(opts.ca === undefined ? undefined : [...rootCertificates, opts.ca], timeoutMs)
    return dispatcher
  }

  /** Read `file`, pinned to `e`, into e.keys: the read's report. Throws an Error saying what is wrong. */
  function readPinned (e: Entry, file: string): FetchReport {
    const t0 = now()
    let doc: unknown
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'))
    } catch (err) {
      throw new Error(err instanceof SyntaxError ? 'is not JSON' : `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    const skipped = new Map<SkipReason, number>()
    const keys = directoryKeys(doc, e.keys, skipped)
    // The operator's own file: one without a usable key is a mistake to hear about, not a revocation.
    if (keys.size === 0) throw new Error(`no usable Ed25519 key${skipped.size === 0 ? '' : ` (skipped: ${describeSkipped(skipped)})`}`)
    e.keys = keys
    return { outcome: 'ok', keys: keys.size, ...skippedField(skipped), ms: now() - t0 }
  }

  async function fetchKeys (e: Entry, skipped: Map<SkipReason, number>): Promise<{ keys: Map<string, KeyObject>, ttl: number, status: number }> {
    const { status, headers, doc } = await fetchJson(e.url, {
      dispatcher: client(),
      timeoutMs,
      maxBytes,
      accept: `${DIRECTORY_MEDIA_TYPE}, application/jwk-set+json, application/json`,
      redirectOutcome: true,
      signal: closing.signal,
    })
    let keys: Map<string, KeyObject>
    try {
      keys = directoryKeys(doc, e.keys, skipped)
    } catch (err) {
      throw new FetchError('invalid', (err as Error).message, status)
    }
    return { keys, ttl: cacheSeconds(headers['cache-control']), status }
  }

  /** Fetch `e` now, or join its fetch in flight. Never rejects: the outcome is recorded. */
  function load (e: Entry): Promise<void> {
    if (e.inflight !== undefined) return e.inflight
    const t0 = now()
    const skipped = new Map<SkipReason, number>()
    e.inflight = fetchKeys(e, skipped).then(({ keys, ttl, status }) => {
      // No usable key: none held any more, but asked again within the shortest lifetime, so that
      // one bad answer (a deploy, an error page) does not lock its agents out for max-age.
      if (keys.size === 0) ttl = MIN_TTL_SECONDS
      e.keys = keys
      e.freshUntil = now() + ttl * 1000
      e.failedAt = Number.NEGATIVE_INFINITY
      onFetch?.(e.url, { outcome: keys.size === 0 ? 'empty' : 'ok', keys: keys.size, ...skippedField(skipped), ttlSeconds: ttl, status, ms: now() - t0 })
    }, (err: unknown) => {
      e.failedAt = now()
      const f = err instanceof FetchError ? err : new FetchError('network', String(err))
      onFetch?.(e.url, { outcome: f.outcome, detail: f.message, ...(f.status === undefined ? {} : { status: f.status }), ms: now() - t0 })
    }).finally(() => { e.inflight = undefined })
    return e.inflight
  }

  function reloadPinned (e: Entry, file: string): void {
    const t0 = now()
    try {
      onFetch?.(e.url, readPinned(e, file))
    } catch (err) {
      // The keys read before keep serving: a file caught mid-write must not lock agents out.
      onFetch?.(e.url, { outcome: 'file', detail: `${file} ${(err as Error).message}`, ms: now() - t0 })
    }
  }

  /** The key now when the directory's keys are fresh (no promise: most requests), else after its (re)fetch. */
  function lookup (e: Entry, keyid: string): KeyLookup | Promise<KeyLookup> {
    const t = now()
    if ((e.keys === undefined || t >= e.freshUntil) && t >= e.failedAt + retryMs && !closing.signal.aborted) {
      return load(e).then(() => held(e, keyid, now()))
    }
    return held(e, keyid, t)
  }

  function held (e: Entry, keyid: string, t: number): KeyLookup {
    if (e.keys === undefined || t >= e.freshUntil + MAX_STALE_SECONDS * 1000) return 'no-keys'
    return e.keys.get(keyid)
  }

  /**
   * A key named by no Signature-Agent: looked up in every allowed directory. A directory whose keys
   * hold it answers at once; only when none does is the answer what the directories being fetched
   * say, so one slow directory delays only the keys it may hold.
   */
  function anyDirectory (keyid: string): KeyLookup | Promise<KeyLookup> {
    const fetching: Array<Promise<KeyLookup>> = []
    let noKeys = false
    for (const e of entries.values()) {
      const k = lookup(e, keyid)
      if (k instanceof Promise) fetching.push(k)
      else if (typeof k === 'object') return k
      else if (k === 'no-keys') noKeys = true
    }
    if (fetching.length === 0) return noKeys ? 'no-keys' : undefined
    return Promise.all(fetching).then((found) => {
      const key = found.find((k) => typeof k === 'object')
      if (key !== undefined) return key
      // The key may be in a directory whose keys are unknown (unreachable): that cannot be told
      // yet (503), not refused.
      return noKeys || found.some((k) => k === 'no-keys') ? 'no-keys' : undefined
    })
  }

  return {
    urls: [...entries.keys()],
    resolve (url, keyid) {
      if (url === undefined) return anyDirectory(keyid)
      const norm = normalized(url)
      if (norm === null) return 'unknown-directory'
      const e = entries.get(norm)
      return e === undefined ? 'unknown-directory' : lookup(e, keyid)
    },
    async refresh () {
      await Promise.all([...entries.values()].map(async (e) => {
        if (e.file !== undefined) reloadPinned(e, e.file)
        else if (!closing.signal.aborted) await load(e)
      }))
    },
    async close () {
      if (closing.signal.aborted) return
      closing.abort(new Error('the directories were closed'))
      await Promise.all([...entries.values()].map((e) => e.inflight))
      await dispatcher?.close()
    },
  }
}
