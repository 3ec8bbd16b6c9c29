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
import { readFileSync, statSync } from 'node:fs'
import type { X509Certificate } from 'node:crypto'
import { AogError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { crlDirectoryFiles, loadCrls, readCrlSource, type CrlSet } from './crl.js'
import { certFacts } from './der.js'
import { settled, watchFiles } from '../watch.js'
import type { Identity } from './tls.js'

/** The certificate behind an identity, and the CA certificates the peer sent with it (direct mode). */
export interface PeerCertificates { leaf: X509Certificate, extra: X509Certificate[] }

/** One link of a chain: a certificate's serial and the fingerprint256 of the CA that issued it. */
interface Link { serial: string, issuer: string }

/** Chains remembered per leaf fingerprint; the map starts over past this size. */
const MAX_CHAINS = 10_000
/** Deepest chain followed (leaf, issuing CAs, root). */
const MAX_DEPTH = 8

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
  metrics?: Pick<Metrics, 'crlNextUpdate' | 'crlStale' | 'crlReloads' | 'reloads'>
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

/**
 * The fingerprints of a deny file, one per line, `#` comments: 64 hex digits, the same with colons
 * (AB:CD:…), or the line `openssl x509 -fingerprint -sha256 -noout` prints (`sha256 Fingerprint=AB:CD:…`,
 * any case). Any other line refuses the whole file (a typo must not silently un-deny anyone).
 */
export function parseDenyList (text: string): Set<string> {
  const set = new Set<string>()
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim()
    if (line === '') continue
    const hex = line.replace(/^sha-?256\s+fingerprint\s*=\s*/i, '').toLowerCase().replace(/:/g, '')
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`line ${i + 1} is not a SHA-256 fingerprint (64 hex digits, AB:CD:… or openssl's "sha256 Fingerprint=AB:CD:…")`)
    set.add(hex)
  }
  return set
}

export class Revocation {
  readonly #opts: RevocationOptions
  readonly #now: () => number
  #denied = new Set<string>()
  #crl: CrlSet | undefined
  /** The TLS context holds the CRLs of #crl. */
  #inTls = false
  #staleLogged = false
  #timer: NodeJS.Timeout | undefined
  /** Stops watching the CRL file or directory and the deny list. */
  #unwatch: Array<() => void> = []
  #cas: X509Certificate[]
  #chains = new Map<string, Link[] | null>()

  constructor (opts: RevocationOptions) {
    this.#opts = opts
    this.#cas = opts.cas
    this.#now = opts.now ?? Date.now
    this.reload(true)
    const every = opts.pollMs ?? 1000
    if (every > 0) {
      for (const f of [opts.crlFile, opts.denyFile]) {
        if (f === undefined) continue
        if (f === opts.crlFile && statSync(f, { throwIfNoEntry: false })?.isDirectory() === true) { this.#watchDirectory(f, every); continue }
        this.#unwatch.push(watchFiles([f], every, () => { this.reload() }))
      }
    }
  }

  /** A CRL directory: polled for a file added, removed, replaced or changed, read once settled (as a watched file). */
  #watchDirectory (dir: string, every: number): void {
    const state = (): string => {
      try {
        return crlDirectoryFiles(dir).map((f) => { const st = statSync(f); return `${f} ${st.ino} ${st.size} ${st.mtimeMs}` }).join('\n')
      } catch (err) {
        return `unreadable: ${(err as Error).message}`
      }
    }
    const s = settled(every, () => { this.reload() })
    let last = state()
    const poll = setInterval(() => {
      const now = state()
      if (now !== last) { last = now; s.changed() }
    }, every).unref()
    this.#unwatch.push(() => {
      clearInterval(poll)
      s.stop()
    })
  }

  /**
   * Replace the agent CAs (a client CA reload): the CRLs are loaded again against them and chains
   * are followed anew. Throws, changing nothing, when the CRLs do not load against the new CAs.
   * True when that reloaded the CRL and deny list too (with a CRL file).
   */
  setCas (cas: X509Certificate[]): boolean {
    const { crlFile } = this.#opts
    // Checked first, so that a refusal leaves the CAs, the CRLs and the TLS context as they were.
    if (crlFile !== undefined) loadCrls(readCrlSource(crlFile), cas)
    this.#cas = cas
    this.#chains.clear()
    if (crlFile !== undefined) this.reload()
    return crlFile !== undefined
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
      this.#timer = setTimeout(() => { this.refresh() }, Math.min(next - now, MAX_TIMER_MS)).unref()
    }
  }

  /** Re-read both files. At start-up (`strict`) a bad file throws; later it is logged and ignored. */
  reload (strict = false): void {
    const { crlFile, denyFile, logger, metrics } = this.#opts
    if (crlFile !== undefined) {
      try {
        const set = loadCrls(readCrlSource(crlFile), this.#cas)
        const eligible = this.#tlsEligible(set, this.#now())
        // The TLS context first: if it refuses the CRL, the per-request list is not changed either.
        this.#opts.onCrl?.(eligible ? set.pems : undefined)
        this.#crl = set
        this.#inTls = eligible
        this.#staleLogged = false
        metrics?.crlReloads.inc({ result: 'ok' })
        metrics?.reloads.inc({ what: 'crl', result: 'ok' })
        if (set.nextUpdate !== undefined) metrics?.crlNextUpdate.set(set.nextUpdate / 1000)
        else metrics?.crlNextUpdate.reset()
        for (const ca of this.#cas) {
          if (!set.revokedBy.has(ca.fingerprint256)) logger.warn({ crlFile, ca: ca.subject.replace(/\n/g, ', ') }, 'no CRL for this agent CA: certificates it issued are refused (at the handshake and per request) until its CRL is added')
        }
        if (set.skipped.length > 0) logger.warn({ crlFile, skipped: set.skipped }, 'CRLs of no configured agent CA skipped: if one is an issuing CA your agents chain through, add that CA to --client-ca (its agents are refused until then)')
        if (!strict) logger.info({ crlFile, crls: set.crls.length, revoked: set.serials.size, handshake: eligible }, 'CRL reloaded')
        this.refresh()
      } catch (err) {
        metrics?.crlReloads.inc({ result: 'refused' })
        metrics?.reloads.inc({ what: 'crl', result: 'failed' })
        if (strict) throw new Error(`cannot load the CRL ${crlFile}: ${(err as Error).message}`)
        logger.error({ crlFile, err: (err as Error).message }, 'CRL reload refused; the previous one stays in force, unchanged')
      }
    }
    if (denyFile !== undefined) {
      try {
        this.#denied = parseDenyList(readFileSync(denyFile, 'utf8'))
        metrics?.reloads.inc({ what: 'deny', result: 'ok' })
        if (!strict) logger.info({ denyFile, denied: this.#denied.size }, 'deny list reloaded')
      } catch (err) {
        metrics?.reloads.inc({ what: 'deny', result: 'failed' })
        if (strict) throw new Error(`cannot load the deny list ${denyFile}: ${(err as Error).message}`)
        logger.error({ denyFile, err: (err as Error).message }, 'deny list reload failed; keeping the previous one')
      }
    }
  }

  /**
   * Throws 403 AOG_NOT_AUTHORIZED when the identity is denied or revoked. With its certificates
   * (`peer`, read only the first time a fingerprint is seen), the chain is followed up the agent
   * CAs: each certificate is checked against the CRL of the CA that issued it (an issuing CA
   * revoked by the root's CRL refuses every agent under it); with --crl, a CA of the chain without
   * a CRL refuses too (as OpenSSL's check of every CRL of the chain does), and a chain that no
   * longer reaches a configured agent CA (a client CA reload removed it) is refused. Without
   * `peer`, the serial is looked up in every CRL.
   */
  check (id: Identity, peer?: () => PeerCertificates): void {
    if (this.#denied.has(id.fingerprint)) throw new AogError('AOG_NOT_AUTHORIZED', 'this client certificate is revoked')
    if (id.source === 'signature') return
    if (peer === undefined) {
      if (this.#crl?.serials.has(id.serial) === true) throw new AogError('AOG_NOT_AUTHORIZED', 'this client certificate is revoked')
      return
    }
    const links = this.#chainOf(id.fingerprint, peer)
    if (links === null) throw new AogError('AOG_NOT_AUTHORIZED', 'this client certificate is not issued by a configured agent CA')
    const set = this.#crl
    if (set === undefined) return
    for (const link of links) {
      const revoked = set.revokedBy.get(link.issuer)
      if (revoked === undefined) throw new AogError('AOG_NOT_AUTHORIZED', 'no CRL for a CA of this client certificate\'s chain')
      if (revoked.has(link.serial)) throw new AogError('AOG_NOT_AUTHORIZED', links[0] === link ? 'this client certificate is revoked' : 'a CA of this client certificate\'s chain is revoked')
    }
  }

  /**
   * The links from the leaf up: each issuer is an agent CA (or, below the first one, a CA the peer
   * sent) whose key verifies the certificate, up to a self-signed CA. null when the chain reaches
   * no agent CA. Remembered per fingerprint until the CAs change.
   */
  #chainOf (fingerprint: string, peer: () => PeerCertificates): Link[] | null {
    const known = this.#chains.get(fingerprint)
    if (known !== undefined) return known
    const { leaf, extra } = peer()
    const issuedBy = (cert: X509Certificate, c: X509Certificate): boolean => cert.checkIssued(c) && cert.verify(c.publicKey)
    const links: Link[] = []
    let anchored = false
    for (let cur = leaf, depth = 0; depth < MAX_DEPTH; depth++) {
      const ca = this.#cas.find((c) => issuedBy(cur, c))
      const issuer = ca ?? (anchored ? undefined : extra.find((c) => issuedBy(cur, c)))
      if (issuer === undefined) break
      links.push({ serial: certFacts(cur.raw).serial, issuer: issuer.fingerprint256 })
      anchored ||= ca !== undefined
      if (issuer.checkIssued(issuer)) break // self-signed: the root
      cur = issuer
    }
    const chain = anchored ? links : null
    if (this.#chains.size >= MAX_CHAINS) this.#chains.clear()
    this.#chains.set(fingerprint, chain)
    return chain
  }

  close (): void {
    clearTimeout(this.#timer)
    for (const unwatch of this.#unwatch.splice(0)) unwatch()
  }
}
