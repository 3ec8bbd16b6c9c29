/**
 * The reference nginx configuration for forwarded mode (`aog-server nginx-config`, and
 * nginx/aog.conf, which is this rendered with the example paths; a test keeps them equal and runs
 * a real nginx with it). It is a fragment for the `http {}` context (e.g. /etc/nginx/conf.d/).
 *
 * With `protect`, nginx also fronts the protected application (docs/protocol.md section 7): the
 * gate's own paths go to the gate, every other request is authorized by the gate's `GET /auth`
 * (`auth_request`) and then proxied to the application with `X-AOG-Agent`.
 */
import { ERRORS, type ErrorCode } from './errors.js'

export interface NginxOptions {
  /** nginx `listen` for agents, e.g. 443 or 0.0.0.0:8443 */
  listen: string
  serverName: string
  serverCert: string
  serverKey: string
  /** The agent CA bundle. */
  clientCa: string
  /** The agent CA's CRL (optional, but recommended). */
  crl?: string | undefined
  /** File whose first line is the HMAC secret (readable by the nginx worker user). */
  secretFile: string
  /** The gate instances' forwarded listeners, host:port each (an array, or comma-separated). */
  upstream: string | string[]
  /** A gate instance failing this many times within failTimeout is left out for failTimeout (default 3). */
  maxFails?: number | undefined
  /** nginx time, e.g. 10s (the default). */
  failTimeout?: string | undefined
  /**
   * How long nginx keeps an idle connection to a gate instance (default 4s): shorter than the
   * gate's keepAliveTimeoutMs (so nginx, not the gate, closes it) and than its drainDelayMs.
   */
  keepaliveTimeout?: string | undefined
  /** Directory holding aog-sign.js. */
  jsPath: string
  /** Largest request body to the gate (keep equal to the gate's --max-body-bytes). */
  maxBody?: string | undefined
  /** The protected application, http://host:port[/prefix]; without it nginx fronts the gate only. */
  protect?: string | undefined
  /** Largest request body to the protected application (default 100m, the gate's --upstream-max-body-bytes). */
  protectMaxBody?: string | undefined
  /**
   * Web Bot Auth (the gate's --web-bot-auth): a client certificate becomes optional (agents without
   * one sign their requests) and the gate gets the Host as the client sent it (the signature's @authority).
   */
  webBotAuth?: boolean | undefined
}

export const EXAMPLE: NginxOptions = {
  listen: '443',
  serverName: 'gate.example.com',
  serverCert: '/etc/aog/server.pem',
  serverKey: '/etc/aog/server-key.pem',
  clientCa: '/etc/aog/agents-ca.pem',
  crl: '/etc/aog/agents-ca.crl',
  secretFile: '/etc/aog/forward-secret',
  upstream: '127.0.0.1:8081',
  jsPath: '/etc/nginx/aog',
  maxBody: '64k',
  protect: 'http://127.0.0.1:8080',
}

/** nginx's `return` of the gate's answer for `code`: its status and problem+json body (lib/http/reply.ts). */
function problem (code: ErrorCode, detail: string): string {
  const { status, title } = ERRORS[code]
  const body = JSON.stringify({ type: `urn:aog:problem:${code.toLowerCase().replaceAll('_', '-')}`, title, status, detail, code })
  // Inside '…' nginx would end the string at a quote and expand $variables.
  if (/['$\\]/.test(body)) throw new Error(`a problem body nginx cannot return literally: ${body}`)
  return `return ${status} '${body}';`
}

/** A named location answering `code` as the gate does; `branches` come before its own answer. */
function problemLocation (name: string, code: ErrorCode, detail: string, branches = ''): string {
  return `    location @${name} {
        default_type application/problem+json;
        add_header Cache-Control no-store always;
${branches}        ${problem(code, detail)}
    }`
}

/** A branch of @aog_401/@aog_403 for the gate's X-AOG-Code `code`, with `headers` added (and Cache-Control again). */
function codeBranch (code: ErrorCode, detail: string, headers: string[] = []): string {
  const added = headers.length === 0 ? [] : ['Cache-Control no-store', ...headers]
  return `        if ($aog_code = ${code}) {
${added.map((h) => `            add_header ${h} always;\n`).join('')}            ${problem(code, detail)}
        }
`
}

const IDENTITY_DETAIL = 'a client certificate signed by the agent CA is required'

function q (s: string): string {
  if (/["\\\n;{}]/.test(s)) throw new Error(`unsafe value for nginx: ${s}`)
  return `"${s}"`
}

/** A value written unquoted (listen, server_name): words without quotes, braces, `;`, `$` or `#`. */
function bare (what: string, s: string): string {
  if (!/^[^\s"'\\;{}$#]+( [^\s"'\\;{}$#]+)*$/.test(s)) throw new Error(`unsafe ${what} for nginx: ${s}`)
  return s
}

/** host:port, [v6]:port or unix:/path, safe to write unquoted in an `upstream` block. */
function serverAddress (s: string): string {
  if (/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$/.test(s) && Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535) return s
  if (/^unix:\/[A-Za-z0-9._/-]+$/.test(s)) return s
  throw new Error(`not HOST:PORT (or unix:/path): ${s}`)
}

/** The gate instances, from an array and/or comma-separated lists. */
function upstreamList (u: string | string[]): string[] {
  const list = (Array.isArray(u) ? u : [u]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '')
  if (list.length === 0) throw new Error('no upstream (the gate\'s forwarded listener, host:port)')
  return list.map(serverAddress)
}

/** http://host[:port][/prefix] → its upstream `server`, its Host header and the URI part of proxy_pass. */
function protectTarget (url: string): { server: string, host: string, uri: string } {
  const m = /^http:\/\/(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(\/[A-Za-z0-9._~%/-]*)?$/.exec(url)
  if (m === null) throw new Error(`--protect must be http://host:port[/prefix] (letters, digits and ._~%/- in the prefix): ${url}`)
  const server = serverAddress(`${m[1]!}:${m[2] ?? '80'}`)
  const host = m[2] === undefined || m[2] === '80' ? m[1]! : `${m[1]!}:${m[2]}`
  const prefix = (m[3] ?? '').replace(/\/+$/, '')
  // A prefix ends in / so that /x becomes /prefix/x; without one nginx passes $request_uri untouched.
  return { server, host, uri: prefix === '' ? '' : `${prefix}/` }
}

function time (what: string, s: string): string {
  if (!/^[0-9]+(ms|s|m|h|d)?$/.test(s)) throw new Error(`${what} must be an nginx time such as 10s: ${s}`)
  return s
}

/** The Host the gate gets: as the client sent it with Web Bot Auth (the signature covers it), else nginx's $host. */
function host (o: NginxOptions): string {
  return o.webBotAuth === true ? '$http_host' : '$host'
}

function size (what: string, s: string): string {
  if (!/^[0-9]+[kKmMgG]?$/.test(s)) throw new Error(`${what} must be an nginx size such as 64k: ${s}`)
  return s
}

/**
 * Client-sent proxy headers that `location /` clears toward the application, besides those it sets:
 * the ones frameworks and servers read for the original scheme, host, port, path or prefix.
 */
export const CLEARED_PROXY_HEADERS = ['X-Forwarded-Prefix', 'X-Forwarded-Port', 'X-Forwarded-Server', 'X-Forwarded-Ssl',
  'X-Forwarded-Scheme', 'X-Forwarded-Uri', 'X-Forwarded-Method', 'X-Forwarded-Path', 'X-Original-Host', 'X-Original-URL',
  'X-Rewrite-URL', 'X-Host']

/** The identity headers signed for the gate, with the request id it logs. */
const FORWARDED = `        proxy_set_header X-AOG-Client-Cert $ssl_client_escaped_cert;
        proxy_set_header X-AOG-Client-Verify $ssl_client_verify;
        proxy_set_header X-AOG-Signature $aog_signature;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Request-Id $request_id;
`

/**
 * The original method and target of an authorization subrequest, cleared: only nginx's own
 * subrequest (/_aog/auth) sets them. nginx picks a location by the normalised path but passes the
 * target as the client sent it, so `/auth/../challenge` reaches the gate through `= /challenge`.
 */
const NO_ORIGINAL = `        proxy_set_header X-Original-Method "";
        proxy_set_header X-Original-URI "";
        proxy_set_header X-Forwarded-Method "";
        proxy_set_header X-Forwarded-Uri "";
`

/** A location proxied to the gate (location / without protect; the gate's own paths with it). */
function gateLocation (o: NginxOptions, match: string, again = false, task = false): string {
  return `    location ${match} {
        client_max_body_size ${size('max-body', o.maxBody ?? '64k')};
        proxy_pass http://aog_gate;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host ${host(o)};
${again
? '        # The three forwarded headers, as above, and no client-sent original method or target.\n'
: `        # The three forwarded headers are set here, on every request, so whatever a client sends
        # under these names is replaced. Careful: a location that sets any proxy_set_header of its
        # own inherits none of these; the signature, not this block, is what the gate trusts.
`}${FORWARDED}${again
? ''
: `        # The original method and target of an authorization are set by nginx's own subrequest
        # only: nginx picks a location by the normalised path but passes the target as the client
        # sent it (\`/auth/../challenge\` is \`= /challenge\`'s), so a client's must not reach the gate.
`}${NO_ORIGINAL}${nextUpstream(again, task)}
    }
`
}

/**
 * When nginx tries the next gate instance (the rendered comments say why). Not http_502/504: the
 * gate answers those for its protected upstream, which every instance reaches the same way; nginx's
 * own 502/504 are error/timeout.
 */
function nextUpstream (again: boolean, task: boolean): string {
  return `${again
? '        # Retries, as above.\n'
: `        # The next gate instance takes what this one could not: a connection refused or reset, a
        # connect timeout. Not a 503: a gate's 503 has spent the request's signed id, which the next
        # would refuse as a replay (the agent gets the 503 and its Retry-After instead). A POST only
        # when nothing of it was sent (no non_idempotent): a protected POST may have acted. A read
        # timeout is past proxy_next_upstream_timeout.
`}${task
? `        # POST /task is sent to the next instance even when it was sent (a connection reset as an
        # instance stops): the gate claims a nonce and a signed request id once in the shared store,
        # so a submission an instance did receive is refused by the next, never verified twice.
        proxy_next_upstream error timeout non_idempotent;`
: '        proxy_next_upstream error timeout;'}
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        proxy_connect_timeout 2s;`
}

/** The protected application's locations: auth_request to the gate, refusals as problem+json. */
function protectedLocations (o: NginxOptions, app: { host: string, uri: string }): string {
  const retry = ['Retry-After $aog_retry_after']
  return `    # The gate's own endpoints go to the gate; every other path is the protected application.
${gateLocation(o, '= /challenge')}${gateLocation(o, '= /task', true, true)}${gateLocation(o, '^~ /.well-known/aog/', true)}
    # The protected application: each request is first authorized by the gate's GET /auth (an
    # auth_request subrequest), then proxied with the gate's X-AOG-Agent assertion.
    location / {
        auth_request /_aog/auth;
        auth_request_set $aog_agent $upstream_http_x_aog_agent;
        auth_request_set $aog_code $upstream_http_x_aog_code;
        # The gate's real status, for a log_format.
        auth_request_set $aog_status $upstream_http_x_aog_status;
        auth_request_set $aog_retry_after $upstream_http_retry_after;
        auth_request_set $aog_ratelimit $upstream_http_ratelimit;
        auth_request_set $aog_ratelimit_policy $upstream_http_ratelimit_policy;
        auth_request_set $aog_link $upstream_http_link;${o.webBotAuth === true ? '\n        auth_request_set $aog_accept_signature $upstream_http_accept_signature;' : ''}
        # auth_request passes on 2xx, 401 and 403 only (any other answer, or no answer, becomes 500):
        # the gate's real refusal is in X-AOG-Code, answered below as the gate answers in direct mode.
        # These error_page lines replace the server's for this location; 495-497 happen before any
        # location is chosen, so they still answer @aog_identity_required.
        error_page 401 = @aog_401;
        error_page 403 = @aog_403;
        error_page 500 = @aog_unavailable;
        # The application's own answers pass unchanged; these are nginx's when it cannot reach it.
        error_page 413 = @aog_body_too_large;
        error_page 502 = @aog_upstream_unavailable;
        error_page 504 = @aog_upstream_timeout;

        client_max_body_size ${size('protect-max-body', o.protectMaxBody ?? '100m')};
        proxy_pass http://aog_app${app.uri};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # The application is addressed by its own name and the client's Host goes in
        # X-Forwarded-Host. nginx, the edge (it terminates the agents' TLS), sets X-Forwarded-For,
        # X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host, and clears ("" drops a header) what a
        # client sent as Forwarded and as each name after it, which frameworks read for the
        # original scheme, host, port, path or prefix. nginx cannot drop a header family by prefix:
        # any other client-sent X-Forwarded-* name reaches the application as sent (the gate's
        # direct mode drops them all).
        proxy_set_header Host ${q(app.host)};
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header Forwarded "";
${CLEARED_PROXY_HEADERS.map((h) => `        proxy_set_header ${h} "";\n`).join('')}        # nginx's request id, the one the gate logs for the decision (the signature's rid).
        proxy_set_header X-Request-Id $request_id;
        # The application trusts X-AOG-Agent only, a JWS it verifies against the gate's JWKS. Every
        # X-AOG-* name the gate uses is set here (to the gate's value or to "", which drops it), so no
        # client can send its own; nginx cannot drop a header family by prefix, so any other
        # client-sent X-AOG-* name (unlike in the gate's direct mode) reaches the application as sent.
        proxy_set_header X-AOG-Agent $aog_agent;
        proxy_set_header X-AOG-Client-Cert "";
        proxy_set_header X-AOG-Client-Verify "";
        proxy_set_header X-AOG-Signature "";
        proxy_set_header X-AOG-Code "";
        proxy_set_header X-AOG-Status "";
        proxy_set_header X-Original-Method "";
        proxy_set_header X-Original-URI "";
    }

    # The authorization subrequest: the gate's GET /auth, without the body, with the original method
    # and request target, and the identity headers signed over them (aog-sign.js signs $request_method
    # and $request_uri, the main request's, so this decision cannot be replayed for another path).
    location = /_aog/auth {
        internal;
        proxy_pass http://aog_gate/auth;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host ${host(o)};
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-Method $request_method;
        proxy_set_header X-Original-URI $request_uri;
${FORWARDED}${nextUpstream(true, false)}
    }

    # The gate's refusals, as the gate answers them in direct mode. nginx's return takes a literal
    # status, hence one branch per code (an if holding only add_header and return is safe; an
    # add_header inside it hides the location's, hence Cache-Control again). On a 401 auth_request
    # itself copies the gate's WWW-Authenticate to the answer (adding it here would send it twice).
${problemLocation('aog_401', 'AOG_IDENTITY_REQUIRED', IDENTITY_DETAIL,
  codeBranch('AOG_GRANT_REQUIRED', 'no live grant for this identity: pass a challenge first (GET /challenge, then POST /task)', ['Link $aog_link']) +
  (o.webBotAuth === true ? codeBranch('AOG_SIGNATURE_INVALID', 'the request signature is missing or invalid (the gate logs which check failed)', ['Accept-Signature $aog_accept_signature']) : ''))}
${problemLocation('aog_403', 'AOG_NOT_AUTHORIZED', 'this client certificate is revoked',
  codeBranch('AOG_RATE_LIMITED', 'too many requests for this identity', [...retry, 'RateLimit $aog_ratelimit', 'RateLimit-Policy $aog_ratelimit_policy']) +
  codeBranch('AOG_UNAVAILABLE', 'the gate cannot decide now; try again shortly', retry) +
  codeBranch('AOG_OVERLOADED', 'the gate is overloaded; try again shortly', retry) +
  codeBranch('AOG_BAD_REQUEST', 'the request cannot be authorized as sent'))}
${problemLocation('aog_body_too_large', 'AOG_BODY_TOO_LARGE', 'the request body is larger than the protected application accepts')}
${problemLocation('aog_upstream_unavailable', 'AOG_UPSTREAM_UNAVAILABLE', 'the protected application cannot be reached')}
${problemLocation('aog_upstream_timeout', 'AOG_UPSTREAM_TIMEOUT', 'the protected application did not answer in time')}
`
}

/** Render the configuration fragment. */
export function renderNginxConfig (o: NginxOptions): string {
  const maxFails = o.maxFails ?? 3
  if (!Number.isInteger(maxFails) || maxFails < 0) throw new Error(`max-fails must be an integer >= 0: ${maxFails}`)
  const servers = upstreamList(o.upstream)
    .map((s) => `    server ${s} max_fails=${maxFails} fail_timeout=${time('fail-timeout', o.failTimeout ?? '10s')};\n`).join('')
  const app = o.protect === undefined ? undefined : protectTarget(o.protect)
  return `# AOG — nginx in front of the gate's forwarded listener (scheme aog-forward-v1).
# Generated by \`aog-server nginx-config\`. Include it in the http {} context; it needs the njs module
# (Debian: libnginx-mod-http-js, loaded by /etc/nginx/modules-enabled/).

# The signer: X-AOG-Signature = HMAC over the verdict, the certificate, the method, the exact request
# target, a timestamp and $request_id. The gate trusts nothing forwarded without it.
js_path ${q(o.jsPath)};
js_import aog from aog-sign.js;
js_set $aog_signature aog.sign;

# The gate instances (they share one Redis). One that fails max_fails times within fail_timeout is
# left out for fail_timeout; a request it could not take is tried on the next (proxy_next_upstream).
# nginx closes idle connections before the gate would (its --keep-alive-timeout-ms, 65 s by default)
# and before a restarting gate's drain ends (--drain-delay-ms), so it never sends on a connection
# the gate is closing.
upstream aog_gate {
${servers}    keepalive 32;
    keepalive_timeout ${time('keepalive-timeout', o.keepaliveTimeout ?? '4s')};
}
${app === undefined
? ''
: `
# The protected application (docs/protocol.md section 7): reached only once the gate allows.
upstream aog_app {
    server ${app.server};
    keepalive 16;
    # Shorter than the application's own idle timeout (Node's default: 5 s).
    keepalive_timeout 4s;
}
`}
server {
    listen ${bare('listen', o.listen)} ssl;
    server_name ${bare('server name', o.serverName)};

    ssl_certificate ${q(o.serverCert)};
    ssl_certificate_key ${q(o.serverKey)};
    # TLS 1.2 and 1.3 only: older versions have known weaknesses and no agent needs them.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;

    # Agents must present a certificate chaining to the agent CA (leaf + at most one intermediate).
    ssl_client_certificate ${q(o.clientCa)};
${o.webBotAuth === true
? `    # Web Bot Auth: an agent without a certificate signs its requests (the gate verifies the
    # signature); a certificate that is presented must still verify, or nginx refuses it (495).
    ssl_verify_client optional;`
: '    ssl_verify_client on;'}
    ssl_verify_depth 2;
${o.crl === undefined
? '    # No CRL configured: the gate still checks --crl and --deny-file on every request.\n'
: `    # Revoked certificates fail the handshake here; the gate checks the CRL again per request,
    # because a resumed TLS session is not verified again.
    ssl_crl ${q(o.crl)};
`}
    # Where the signer reads its secret (first line). Keep it readable by the worker user only.
    set $aog_secret_file ${q(o.secretFile)};

    # A missing or refused certificate answers like the gate does (problem+json 401), not nginx's
    # HTML page. 495: certificate error, 496: no certificate, 497: plain HTTP to this TLS port.
    error_page 495 496 497 = @aog_identity_required;
${problemLocation('aog_identity_required', 'AOG_IDENTITY_REQUIRED', IDENTITY_DETAIL)}

    # nginx's own 502/503/504 (no gate instance answered, or none in time) as the gate's 503: fail
    # closed, retry shortly. The gate's own answers pass unchanged (proxy_intercept_errors is off).
    # Also where auth_request cannot pass on a gate's answer (error_page 500 in location /).
    error_page 502 503 504 = @aog_unavailable;
${problemLocation('aog_unavailable', 'AOG_UNAVAILABLE', 'the gate is unavailable; try again shortly', '        add_header Retry-After 1 always;\n')}

${app === undefined
? gateLocation(o, '/') + gateLocation(o, '= /task', true, true)
: protectedLocations(o, app)}}
`
}
