/**
 * Revocation checked on every request, in both modes (docs/protocol.md section 1): by serial (the CRL of
 * `--crl`) and by fingerprint (the deny list of `--deny-file`, one 64-hex fingerprint per line, `#`
 * comments). Both files are reloaded when they change (polled, so an atomic rename is seen too) or on
 * reload() (SIGHUP), without a restart. A file that fails to parse keeps the previous list and is
 * logged: a broken update must not silently un-revoke anyone.
 *
 * A CRL past its nextUpdate stays in force on every request (it is the newest list there is), but
 * leaves the TLS context, whose OpenSSL would refuse every handshake with it; the gate warns, sets
 * aog_crl_stale, and /readyz turns 503 once the grace (--crl-grace-seconds) is over.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import type { X509Certificate } from 'node:crypto'
import { AogError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { loadCrls, type CrlSet } from './crl.js'
import type { Identity } from './tls.js'

export interface RevocationOptions {
  crlFile?: string | undefined
  denyFile?: string | undefined
  /** CAs that may sign the CRL (the agent CAs). */
  cas: X509Certificate[]
  logger: Logger
  /**
   * Sets the CRLs (PEM, one per CRL) the TLS context checks at the handshake, or none (undefined).
   * Called before a new CRL is put in force; if it throws, the reload is refused and nothing changes.
   */
  onCrl?: (pems: string[] | undefined) => void
  /** Poll interval for file changes (ms); 0 disables watching. */
  pollMs?: number
  /** How long past its nextUpdate the CRL may be before the gate reports not ready (s). */
  graceSeconds?: number
  metrics?: Pick<Metrics, 'crlNextUpdate' | 'crlStale' | 'crlReloads'>
  /** Clock (ms); tests inject one. */
  now?: () => number
}

/** What /readyz shows of the CRL. */
export interface CrlStatus {
  /** Earliest nextUpdate of the CRLs in force (ms), undefined when none has one. */
  nextUpdate: number | undefined
  /** Past its nextUpdate: still enforced per request, no longer given to the TLS context. */
  stale: boolean
  /** The TLS context checks the CRL at the handshake. */
  handshake: boolean
  /** False once stale for longer than the grace. */
  ready: boolean
}

/**
 * The TLS context only gets CRLs that OpenSSL will accept: past nextUpdate (or before thisUpdate)
 * OpenSSL refuses every handshake. They leave the context this long before nextUpdate, so no
 * handshake meets an expired CRL while the timer is late.
 */
const TLS_MARGIN_MS = 5000
/** Longest timer (setTimeout overflows past 2^31-1 ms); the state is re-evaluated when it fires. */
const MAX_TIMER_MS = 3_600_000

export class Revocation {
  readonly #opts: RevocationOptions
  readonly #now: () => number
  #serials = new Set<string>()
  #denied = new Set<string>()
  #crl: CrlSet | undefined
  /** The TLS context holds the CRLs of #crl. */
  #inTls = false
  #staleLogged = false
  #timer: NodeJS.Timeout | undefined
  #watched: string[] = []

  constructor (opts: RevocationOptions) {
    this.#opts = opts
    this.#now = opts.now ?? Date.now
    this.reload(true)
    const every = opts.pollMs ?? 1000
    if (every > 0) {
      for (const f of [opts.crlFile, opts.denyFile]) {
        if (f === undefined) continue
        watchFile(f, { interval: every, persistent: false }, (cur, prev) => {
          if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino || cur.size !== prev.size) this.reload()
        })
        this.#watched.push(f)
      }
    }
  }

  /** Revoked serials and denied fingerprints currently in force. */
  get size (): { serials: number, denied: number } {
    return { serials: this.#serials.size, denied: this.#denied.size }
  }

  /**
   * Whether the TLS context may hold these CRLs now (each within thisUpdate .. nextUpdate - margin);
   * never without a TLS context to update (forwarded mode).
   */
  #tlsEligible (set: CrlSet, now: number): boolean {
    return this.#opts.onCrl !== undefined && set.crls.every((c) => c.thisUpdate <= now && (c.nextUpdate === undefined || now < c.nextUpdate - TLS_MARGIN_MS))
  }

  /** The CRL's state for /readyz (undefined without --crl). */
  crlStatus (): CrlStatus | undefined {
    const set = this.#crl
    if (set === undefined) return undefined
    const now = this.#now()
    const next = set.nextUpdate
    const stale = next !== undefined && now > next
    const graceMs = (this.#opts.graceSeconds ?? 3600) * 1000
    return { nextUpdate: next, stale, handshake: this.#inTls, ready: !stale || now - next <= graceMs }
  }

  /**
   * Re-evaluate the CRL's place in the TLS context and its staleness (a timer calls this at each
   * change; tests with an injected clock call it directly).
   */
  refresh (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const set = this.#crl
    if (set === undefined) return
    const { logger, crlFile, metrics } = this.#opts
    const now = this.#now()
    const eligible = this.#tlsEligible(set, now)
    if (eligible !== this.#inTls) {
      try {
        this.#opts.onCrl?.(eligible ? set.pems : undefined)
        this.#inTls = eligible
        logger.info({ crlFile, handshake: eligible }, eligible ? 'the CRL is checked at the handshake again' : 'the CRL is no longer checked at the handshake (outside its update times); still enforced on every request')
      } catch (err) {
        logger.error({ crlFile, err: (err as Error).message }, 'updating the TLS context with the CRL failed')
      }
    }
    const stale = set.nextUpdate !== undefined && now > set.nextUpdate
    metrics?.crlStale.set(stale ? 1 : 0)
    if (stale && !this.#staleLogged) {
      this.#staleLogged = true
      logger.warn({ crlFile, nextUpdate: new Date(set.nextUpdate!).toISOString(), graceSeconds: this.#opts.graceSeconds ?? 3600 }, 'the CRL is past its nextUpdate: revocations still enforced on every request, handshakes accepted; publish a new CRL')
    }
    // The next change: thisUpdate reached, the margin before nextUpdate, nextUpdate itself.
    const moments: number[] = []
    for (const c of set.crls) {
      moments.push(c.thisUpdate)
      if (c.nextUpdate !== undefined) moments.push(c.nextUpdate - TLS_MARGIN_MS, c.nextUpdate + 1)
    }
    const next = Math.min(...moments.filter((m) => m > now))
    if (Number.isFinite(next)) {
      this.#timer = setTimeout(() => { this.refresh() }, Math.min(next - now, MAX_TIMER_MS))
      this.#timer.unref()
    }
  }

  /** Re-read both files. At start-up (`strict`) a bad file throws; later it is logged and ignored. */
  reload (strict = false): void {
    const { crlFile, denyFile, logger, metrics } = this.#opts
    if (crlFile !== undefined) {
      try {
        const set = loadCrls(readFileSync(crlFile), this.#opts.cas)
        const eligible = this.#tlsEligible(set, this.#now())
        // The TLS context first: if it refuses the CRL, the per-request list is not changed either.
        this.#opts.onCrl?.(eligible ? set.pems : undefined)
        this.#crl = set
        this.#inTls = eligible
        this.#staleLogged = false
        this.#serials = set.serials
        metrics?.crlReloads.inc({ result: 'ok' })
        if (set.nextUpdate !== undefined) metrics?.crlNextUpdate.set(set.nextUpdate / 1000)
        else metrics?.crlNextUpdate.reset()
        const covered = new Set(set.crls.map((c) => c.issuer))
        for (const ca of this.#opts.cas) {
          if (!covered.has(ca)) logger.warn({ crlFile, ca: ca.subject.replace(/\n/g, ', ') }, 'no CRL for this agent CA in the file: while the CRL is checked at the handshake, its agents are refused there')
        }
        if (!strict) logger.info({ crlFile, crls: set.crls.length, revoked: set.serials.size, handshake: eligible }, 'CRL reloaded')
        this.refresh()
      } catch (err) {
        metrics?.crlReloads.inc({ result: 'refused' })
        if (strict) throw new Error(`cannot load the CRL ${crlFile}: ${(err as Error).message}`)
        logger.error({ crlFile, err: (err as Error).message }, 'CRL reload refused; the previous one stays in force, unchanged')
      }
    }
    if (denyFile !== undefined) {
      try {
        const set = new Set<string>()
        for (const [i, raw] of readFileSync(denyFile, 'utf8').split('\n').entries()) {
          const line = raw.replace(/#.*/, '').trim().toLowerCase().replace(/:/g, '')
          if (line === '') continue
          if (!/^[0-9a-f]{64}$/.test(line)) throw new Error(`line ${i + 1} is not a SHA-256 fingerprint`)
          set.add(line)
        }
        this.#denied = set
        if (!strict) logger.info({ denyFile, denied: set.size }, 'deny list reloaded')
      } catch (err) {
        if (strict) throw new Error(`cannot load the deny list ${denyFile}: ${(err as Error).message}`)
        logger.error({ denyFile, err: (err as Error).message }, 'deny list reload failed; keeping the previous one')
      }
    }
  }

  /** Throws 403 AOG_NOT_AUTHORIZED when the identity is revoked or denied. */
  check (id: Identity): void {
    if (this.#denied.has(id.fingerprint) || (id.source !== 'signature' && this.#serials.has(id.serial))) {
      throw new AogError('AOG_NOT_AUTHORIZED', 'this client certificate is revoked')
    }
  }

  close (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    for (const f of this.#watched) unwatchFile(f)
    this.#watched = []
  }
}
