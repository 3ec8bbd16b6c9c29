/**
 * The identity step of every request (docs/protocol.md section 1): who is calling (the TLS peer, or
 * the signed forwarded headers), revocation, and in forwarded mode the single-use request id; with
 * the material it reads (agent CAs, CRLs, deny list, forward secrets) and their reloading.
 */
import type { IncomingMessage } from 'node:http'
import type { TLSSocket } from 'node:tls'
import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import type { X509Certificate } from 'node:crypto'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { RequestContext } from '../handlers/context.js'
import { tlsIdentity } from '../identity/tls.js'
import { forwardedIdentity } from '../identity/forwarded.js'
import { Revocation, type CrlStatus } from '../identity/revocation.js'
import { AUTH_PATH, originalRequest } from '../handlers/access.js'
import { AogError } from '../errors.js'

/** One secret per line (blank lines and # comments ignored); every line is accepted. */
export function readSecrets (file: string): Buffer[] {
  const secrets = readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  if (secrets.length === 0) throw new Error(`no secret in ${file}`)
  for (const s of secrets) if (s.length < 16) throw new Error(`a secret in ${file} is shorter than 16 characters`)
  return secrets.map((s) => Buffer.from(s, 'utf8'))
}

export interface IdentityOptions {
  config: Readonly<Config>
  cas: X509Certificate[]
  logger: Logger
  metrics: Metrics
  /** Poll interval for file changes (ms); 0 disables watching. */
  watchMs: number
  now?: (() => number) | undefined
  /** Direct mode: the TLS context takes the CRLs the per-request list comes from (a throw refuses the reload). */
  onCrl?: ((pems: string[] | undefined) => void) | undefined
}

export interface IdentityStep {
  /** Set ctx.identity (and ctx.once), or throw the refusal. */
  identify (ctx: RequestContext): void
  /** Re-read the CRL, the deny list and the forward secrets (SIGHUP). */
  reload (): void
  crlStatus (): CrlStatus | undefined
  close (): void
}

export function createIdentityStep (opts: IdentityOptions): IdentityStep {
  const { config, cas, logger } = opts
  const forwarded = config.mode === 'forwarded'
  const revocation = new Revocation({
    crlFile: config.crl,
    denyFile: config.denyFile,
    cas,
    logger,
    pollMs: opts.watchMs,
    graceSeconds: config.crlGraceSeconds,
    metrics: opts.metrics,
    // Forwarded mode has no agent handshake here (the proxy checks its own CRL).
    ...(forwarded || opts.onCrl === undefined ? {} : { onCrl: opts.onCrl }),
  })
  const secretFile = forwarded ? config.forwardSecretFile : undefined
  let secrets = secretFile === undefined ? [] : readSecrets(secretFile)
  const reloadSecrets = (): void => {
    if (secretFile === undefined) return
    try {
      secrets = readSecrets(secretFile)
      logger.info({ secrets: secrets.length }, 'forward secrets reloaded')
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'forward secret reload failed; keeping the previous ones')
    }
  }
  if (secretFile !== undefined && opts.watchMs > 0) {
    watchFile(secretFile, { interval: opts.watchMs, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size) reloadSecrets()
    })
  }
  const onceTtlMs = 2 * config.forwardSkewSeconds * 1000

  function identify (ctx: RequestContext): void {
    const req: IncomingMessage = ctx.req
    if (!forwarded) {
      const identity = tlsIdentity(req.socket as TLSSocket)
      revocation.check(identity)
      ctx.identity = identity
      return
    }
    // An authorization subrequest is signed for the request it authorizes (docs/protocol.md
    // section 7): its original method and target, so a signature for /a cannot authorize /b.
    let method = req.method ?? ''
    let target = req.url ?? ''
    if (ctx.route === AUTH_PATH) {
      const original = originalRequest(req)
      if (original === undefined) throw new AogError('AOG_BAD_REQUEST', 'X-Original-Method and X-Original-URI are required on /auth')
      method = original.method
      target = original.target
    }
    const r = forwardedIdentity(method, target, req.headers, {
      secrets,
      skewSeconds: config.forwardSkewSeconds,
      cas,
      ...(opts.now === undefined ? {} : { now: opts.now }),
    })
    revocation.check(r.identity)
    ctx.identity = r.identity
    ctx.once = { id: r.rid, ttlMs: onceTtlMs }
  }

  return {
    identify,
    reload () {
      revocation.reload()
      reloadSecrets()
    },
    crlStatus: () => revocation.crlStatus(),
    close () {
      revocation.close()
      if (secretFile !== undefined) unwatchFile(secretFile)
    },
  }
}
