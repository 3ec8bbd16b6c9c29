/**
 * The identity step of every request (docs/protocol.md section 1): who is calling (the TLS peer, or
 * the signed forwarded headers), revocation, and in forwarded mode the single-use request id; with
 * the material it reads (agent CAs, CRLs, deny list, forward secrets) and their reloading.
 */
import type { IncomingMessage } from 'node:http'
import type { TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import { watchFiles } from '../watch.js'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { RequestContext } from '../handlers/context.js'
import { hash, X509Certificate } from 'node:crypto'
import { dirname } from 'node:path'
import { presentedCertificate, tlsIdentity, type Identity } from '../identity/tls.js'
import { comparableAuthority, keyidHex, normalizeAuthority, signatureError, verifyRequest } from '../webbotauth/httpsig.js'
import { createKeyDirectories, parseSignatureAgentsFile, type KeyDirectories } from '../webbotauth/directory.js'
import { textMemo } from '../webbotauth/text-memo.js'
import { forwardedIdentity, HEADERS, readCertificates } from '../identity/forwarded.js'
import { Revocation, type CrlStatus, type PeerCertificates } from '../identity/revocation.js'
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
  /** Direct mode: the TLS context takes a reloaded client CA bundle (a throw refuses the reload). */
  onClientCa?: ((ca: Buffer) => void) | undefined
}

/** --web-bot-auth: the allowed key directories, and the gate's own authorities a signature must name. */
interface WebBotAuth {
  directories: KeyDirectories
  /** The authorities (host[:port]) requests to this listener port may name; undefined: any. */
  authorities: (port: number) => readonly string[] | undefined
  close: () => void
}

/**
 * The method and target a request's signature covers: its own, or on /auth those of the request it
 * authorizes (docs/protocol.md section 7), so a signature for /a cannot authorize /b.
 */
function signedRequest (ctx: RequestContext): { method: string, target: string } {
  if (ctx.route !== AUTH_PATH) return { method: ctx.req.method ?? '', target: ctx.req.url ?? '' }
  const original = originalRequest(ctx.req)
  if (original === undefined) throw new AogError('AOG_BAD_REQUEST', 'X-Original-Method and X-Original-URI are required on /auth')
  return original
}

/** The TLS peer's certificate and the CA certificates it sent (read once per fingerprint by Revocation). */
function peerCertificates (socket: TLSSocket): PeerCertificates {
  const peer = socket.getPeerCertificate(true)
  const extra: X509Certificate[] = []
  const seen = new Set<object>([peer])
  for (let c = peer.issuerCertificate; c !== undefined && c !== null && !seen.has(c) && extra.length < 8; c = c.issuerCertificate) {
    seen.add(c)
    if (Buffer.isBuffer(c.raw)) extra.push(new X509Certificate(c.raw))
  }
  return { leaf: new X509Certificate(peer.raw), extra }
}

/** The directory fetch bounds (docs/operations.md). */
const DIRECTORY_TIMEOUT_MS = 5000
const DIRECTORY_MAX_BYTES = 65536

function createWebBotAuth (config: Readonly<Config>, logger: Logger, metrics: Metrics, watchMs: number): WebBotAuth {
  const file = config.signatureAgents!
  const load = (): KeyDirectories => createKeyDirectories({
    allow: parseSignatureAgentsFile(readFileSync(file, 'utf8'), { baseDir: dirname(file), source: file }),
    ca: config.signatureAgentsCa === undefined ? undefined : readFileSync(config.signatureAgentsCa),
    timeoutMs: DIRECTORY_TIMEOUT_MS,
    maxBytes: DIRECTORY_MAX_BYTES,
    onFetch: (url, r) => {
      metrics.directoryFetches.inc({ outcome: r.outcome })
      // A skipped key (published with its private part, weak, not Ed25519) is an agent's mistake to hear about.
      if (r.outcome === 'empty') logger.warn({ url, keys: 0, skipped: r.skipped, ttlSeconds: r.ttlSeconds }, 'signature agent directory holds no usable key: its signatures are refused until it does')
      else if (r.outcome === 'ok' && r.skipped !== undefined) logger.warn({ url, keys: r.keys, skipped: r.skipped, ttlSeconds: r.ttlSeconds }, 'signature agent directory loaded; some of its keys are not usable')
      else if (r.outcome === 'ok') logger.info({ url, keys: r.keys, ttlSeconds: r.ttlSeconds }, 'signature agent directory loaded')
      else logger.warn({ url, outcome: r.outcome, status: r.status, detail: r.detail }, 'signature agent directory fetch failed')
    },
  })
  const web: WebBotAuth = { directories: load(), authorities: authoritiesOf(config), close: () => {} }
  if (config.mode === 'forwarded' && config.signatureAuthorities === undefined) {
    logger.warn('forwarded mode without --signature-authorities: a signature made for any host is accepted here (docs/protocol.md 8.5); name the hosts agents reach the gate by')
  }
  // A changed allow list replaces the directories (their cache starts over); SIGHUP refetches.
  const unwatch = watchFiles([file], watchMs, () => {
    try {
      const old = web.directories
      web.directories = load()
      void old.close()
      logger.info({ file }, 'signature agents reloaded')
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'signature agents reload failed; keeping the previous list')
    }
  })
  web.close = () => {
    unwatch()
    void web.directories.close()
  }
  return web
}

/**
 * The authorities a signature must name: --signature-authorities, or (direct mode) the server
 * certificate's DNS and IP names on the listener's port; undefined (any) behind a proxy without it.
 */
function authoritiesOf (config: Readonly<Config>): (port: number) => readonly string[] | undefined {
  if (config.signatureAuthorities !== undefined) {
    const fixed = config.signatureAuthorities.split(',').map((a) => comparableAuthority(normalizeAuthority(a.trim(), 'https')))
    return () => fixed
  }
  if (config.mode === 'forwarded' || config.tlsCert === undefined) return () => undefined
  const san = new X509Certificate(readFileSync(config.tlsCert)).subjectAltName ?? ''
  const names = san.split(',').map((p) => p.trim()).flatMap((p) => {
    if (p.startsWith('DNS:')) return [p.slice(4)]
    if (p.startsWith('IP Address:')) return [p.slice(11).includes(':') ? `[${p.slice(11)}]` : p.slice(11)]
    return []
  })
  const byPort = new Map<number, readonly string[]>()
  return (port) => {
    let list = byPort.get(port)
    if (list === undefined) byPort.set(port, list = names.map((n) => comparableAuthority(normalizeAuthority(`${n}:${port}`, 'https'))))
    return list
  }
}

export interface IdentityStep {
  /** Set ctx.identity (and ctx.once), or throw (reject with) the refusal; async only for a signature. */
  identify (ctx: RequestContext): void | Promise<void>
  /** Re-read the client CA bundle, the CRL, the deny list and the forward secrets (SIGHUP). */
  reload (): void
  crlStatus (): CrlStatus | undefined
  close (): void
}

/**
 * Reload the client CA bundle (SIGHUP, or its file changed): the handshake (direct mode), the
 * per-request chain and CRL checks, and forwarded mode's issuer check all take the new CAs; a
 * failure (unreadable, no certificate, the CRLs do not load against them) keeps the old ones.
 */
function clientCaReloader (opts: IdentityOptions, revocation: Revocation, set: (cas: X509Certificate[]) => void): { reload: () => boolean, close: () => void } {
  const { config, logger, metrics } = opts
  const file = config.clientCa
  let current = opts.cas
  // True when the revocation data was reloaded with the new CAs (so a SIGHUP need not again).
  const reload = (): boolean => {
    if (file === undefined) return false
    let revocationReloaded = false
    try {
      const pem = readFileSync(file)
      const next = readCertificates(pem)
      if (next.length === 0) throw new Error(`no certificate in ${file}`)
      opts.onClientCa?.(pem)
      try {
        revocationReloaded = revocation.setCas(next)
      } catch (err) {
        opts.onClientCa?.(Buffer.concat(current.map((c) => Buffer.from(c.toString()))))
        throw new Error(`the CRLs do not load against the new CAs: ${(err as Error).message}`)
      }
      current = next
      set(next)
      metrics.reloads.inc({ what: 'client_ca', result: 'ok' })
      logger.info({ clientCa: file, cas: next.length }, 'client CA bundle reloaded')
    } catch (err) {
      metrics.reloads.inc({ what: 'client_ca', result: 'failed' })
      logger.error({ clientCa: file, err: (err as Error).message }, 'client CA reload failed; keeping the previous CAs')
    }
    return revocationReloaded
  }
  return { reload, close: watchFiles(file === undefined ? [] : [file], opts.watchMs, () => { void reload() }) }
}

/**
 * The identity of a signature key (thumbprint, then a space and the directory when one is named),
 * shared by that agent's requests as a connection's identity is shared by its requests over mTLS:
 * the request log line keeps its text per identity object (log-line.ts). Not to be changed.
 */
const signatureIdentityOf = textMemo(256, (text: string): Identity => {
  const space = text.indexOf(' ')
  const keyid = space < 0 ? text : text.slice(0, space)
  return { fingerprint: keyidHex(keyid), serial: '', subject: keyid, uri: space < 0 ? '' : text.slice(space + 1), source: 'signature' }
})

export function createIdentityStep (opts: IdentityOptions): IdentityStep {
  const { config, logger } = opts
  let cas = opts.cas
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
  const clientCa = clientCaReloader(opts, revocation, (next) => { cas = next })
  const secretFile = forwarded ? config.forwardSecretFile : undefined
  let secrets = secretFile === undefined ? [] : readSecrets(secretFile)
  const reloadSecrets = (): void => {
    if (secretFile === undefined) return
    try {
      secrets = readSecrets(secretFile)
      opts.metrics.reloads.inc({ what: 'forward_secret', result: 'ok' })
      logger.info({ secrets: secrets.length }, 'forward secrets reloaded')
    } catch (err) {
      opts.metrics.reloads.inc({ what: 'forward_secret', result: 'failed' })
      logger.error({ err: (err as Error).message }, 'forward secret reload failed; keeping the previous ones')
    }
  }
  const unwatchSecrets = watchFiles(secretFile === undefined ? [] : [secretFile], opts.watchMs, reloadSecrets)
  const onceTtlMs = 2 * config.forwardSkewSeconds * 1000
  const web = config.webBotAuth ? createWebBotAuth(config, logger, opts.metrics, opts.watchMs) : undefined

  /**
   * Web Bot Auth (docs/protocol.md section 8): the request's own HTTP message signature names the
   * key F; its nonce becomes the request's single-use key (claimed by the handler's store call,
   * kept until the signature expires), so a captured signature cannot be replayed.
   */
  async function signatureIdentity (ctx: RequestContext, web: WebBotAuth): Promise<void> {
    const req = ctx.req
    const now = (opts.now ?? Date.now)()
    const original = signedRequest(ctx)
    const v = await verifyRequest(
      { method: original.method, authority: req.headers.host ?? '', target: original.target, scheme: 'https', headers: req.headers, rawHeaders: req.rawHeaders },
      { now, skewSeconds: config.signatureSkewSeconds, maxValiditySeconds: config.signatureMaxValiditySeconds, resolveKey: web.directories.resolve, authorities: web.authorities(req.socket.localPort ?? 0) }
    )
    // The key lookup may have waited for its directory (up to the fetch timeout): a signature that
    // expired meanwhile is refused like any expired one (docs/protocol.md section 8, step 7).
    if ((opts.now ?? Date.now)() >= v.expires) throw signatureError('signature expired')
    const identity = signatureIdentityOf(v.directory === undefined ? v.keyid : `${v.keyid} ${v.directory}`)
    // A denied key is a signature refusal like the others (docs/protocol.md section 8).
    try {
      revocation.check(identity)
    } catch {
      throw signatureError('the signing key is denied (deny list)')
    }
    ctx.identity = identity
    ctx.once = { id: hash('sha256', `${v.keyid} ${v.nonce}`, 'base64url'), ttlMs: Math.max(1000, v.expires - now + (config.signatureSkewSeconds + 1) * 1000) }
  }

  function identify (ctx: RequestContext): void | Promise<void> {
    const req: IncomingMessage = ctx.req
    if (!forwarded) {
      const socket = req.socket as TLSSocket
      // With --web-bot-auth the handshake admits peers without a verified certificate: a peer that
      // presented none signs its requests; one whose certificate failed is refused, never downgraded.
      // (A resumed TLS 1.3 session without a certificate counts as authorized in node: the
      // certificate itself, not the flag, says whether one was presented.)
      if (web !== undefined) {
        const presented = presentedCertificate(socket)
        if (!presented) return signatureIdentity(ctx, web)
        if (socket.authorized !== true) throw new AogError('AOG_IDENTITY_REQUIRED', `the client certificate did not verify (${String(socket.authorizationError ?? 'unknown')})`)
      }
      const identity = tlsIdentity(socket)
      revocation.check(identity, () => peerCertificates(socket))
      ctx.identity = identity
      return
    }
    const { method, target } = signedRequest(ctx)
    const r = forwardedIdentity(method, target, req.headers, {
      secrets,
      skewSeconds: config.forwardSkewSeconds,
      cas,
      allowNoCertificate: true,
      ...(opts.now === undefined ? {} : { now: opts.now }),
    })
    // No certificate behind the proxy: the signature decides, its nonce the single-use key (which
    // also stops the proxy's header set from being replayed, since it carries the same signature).
    if (r.identity === undefined) {
      if (web === undefined) throw new AogError('AOG_IDENTITY_REQUIRED', 'forwarded identity headers missing')
      return signatureIdentity(ctx, web)
    }
    revocation.check(r.identity, () => ({ leaf: new X509Certificate(decodeURIComponent(String(req.headers[HEADERS.cert]))), extra: [] }))
    ctx.identity = r.identity
    ctx.once = { id: r.rid, ttlMs: onceTtlMs }
  }

  return {
    identify,
    reload () {
      if (!clientCa.reload()) revocation.reload()
      reloadSecrets()
      if (web !== undefined) void web.directories.refresh()
    },
    crlStatus: () => revocation.crlStatus(),
    close () {
      web?.close()
      revocation.close()
      unwatchSecrets()
      clientCa.close()
    },
  }
}
