/**
 * Revocation checked on every request, in both modes (PROTOCOL.md section 1): by serial (the CRL of
 * `--crl`) and by fingerprint (the deny list of `--deny-file`, one 64-hex fingerprint per line, `#`
 * comments). Both files are reloaded when they change (polled, so an atomic rename is seen too) or on
 * reload() (SIGHUP), without a restart. A file that fails to parse keeps the previous list and is
 * logged: a broken update must not silently un-revoke anyone.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import type { X509Certificate } from 'node:crypto'
import { AogError } from '../errors.js'
import type { Logger } from '../log.js'
import { parseCrl } from './crl.js'
import type { Identity } from './tls.js'

export interface RevocationOptions {
  crlFile?: string | undefined
  denyFile?: string | undefined
  /** CAs that may sign the CRL (the agent CAs). */
  cas: X509Certificate[]
  logger: Logger
  /** Called with the new CRL (PEM/DER bytes) after each successful reload (to update the TLS context). */
  onCrl?: (crl: Buffer) => void
  /** Poll interval for file changes (ms); 0 disables watching. */
  pollMs?: number
}

export class Revocation {
  readonly #opts: RevocationOptions
  #serials = new Set<string>()
  #denied = new Set<string>()
  /**
   * The fingerprint and serial last found neither revoked nor denied by the current lists: under
   * load most requests come from that certificate, and its check is then two string comparisons
   * instead of two lookups. Compared by value: each connection of the same agent has an identity
   * object of its own (tls.ts caches per socket), and an agent with many connections alternates
   * between them. Forgotten whenever a list is replaced.
   */
  #lastAllowed: { fingerprint: string, serial: string } | undefined
  #watched: string[] = []

  constructor (opts: RevocationOptions) {
    this.#opts = opts
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

  /** Re-read both files. At start-up (`strict`) a bad file throws; later it is logged and ignored. */
  reload (strict = false): void {
    const { crlFile, denyFile, logger } = this.#opts
    if (crlFile !== undefined) {
      try {
        const data = readFileSync(crlFile)
        const crl = parseCrl(data, this.#opts.cas)
        if (crl.nextUpdate !== undefined && crl.nextUpdate < Date.now()) logger.warn({ crlFile }, 'the CRL is past its nextUpdate; still enforcing it')
        this.#serials = crl.serials
        this.#lastAllowed = undefined
        this.#opts.onCrl?.(data)
        if (!strict) logger.info({ crlFile, revoked: crl.serials.size }, 'CRL reloaded')
      } catch (err) {
        if (strict) throw new Error(`cannot load the CRL ${crlFile}: ${(err as Error).message}`)
        logger.error({ crlFile, err: (err as Error).message }, 'CRL reload failed; keeping the previous one')
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
        this.#lastAllowed = undefined
        if (!strict) logger.info({ denyFile, denied: set.size }, 'deny list reloaded')
      } catch (err) {
        if (strict) throw new Error(`cannot load the deny list ${denyFile}: ${(err as Error).message}`)
        logger.error({ denyFile, err: (err as Error).message }, 'deny list reload failed; keeping the previous one')
      }
    }
  }

  /** Throws 403 AOG_NOT_AUTHORIZED when the identity is revoked or denied. */
  check (id: Identity): void {
    const last = this.#lastAllowed
    if (last !== undefined && id.fingerprint === last.fingerprint && id.serial === last.serial) return
    if (this.#denied.has(id.fingerprint) || this.#serials.has(id.serial)) {
      throw new AogError('AOG_NOT_AUTHORIZED', 'this client certificate is revoked')
    }
    this.#lastAllowed = { fingerprint: id.fingerprint, serial: id.serial }
  }

  close (): void {
    for (const f of this.#watched) unwatchFile(f)
    this.#watched = []
  }
}
