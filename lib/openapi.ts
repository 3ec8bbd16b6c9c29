/**
 * The OpenAPI 3.1 document of the agent-facing API: GET /challenge, POST /task, GET /auth (and
 * Envoy's /auth/… form), the protected requests of section 7 (their 401 AOG_GRANT_REQUIRED above
 * all), and this document itself. Its schemas are the TypeBox schemas the gate validates with
 * (lib/protocol/schemas.ts), copied in as JSON: there is no second copy to keep in step. Which
 * codes each operation can answer comes from the error table (lib/errors.ts): each status lists
 * exactly its codes. `aog-server openapi` prints it; the gate serves it at
 * GET /.well-known/aog/openapi.json (getOpenApi).
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ERRORS, type ErrorCode } from './errors.js'
import { jsonHeaders } from './http/reply.js'
import { packageRoot } from './paths.js'
import { ChallengeResponse, Grant, Problem, TaskBody, TaskResponse } from './protocol/schemas.js'
import type { Handler } from './handlers/context.js'

/** Where the gate serves the document. */
export const OPENAPI_PATH = '/.well-known/aog/openapi.json'

type Json = Record<string, unknown>

/** A TypeBox schema as plain JSON Schema (TypeBox's symbol-keyed markers dropped). */
function plain (schema: object): Json {
  return JSON.parse(JSON.stringify(schema)) as Json
}

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` })
const header = (name: string): Json => ({ $ref: `#/components/headers/${name}` })
const rateLimitHeaders = (): Json => ({ RateLimit: header('RateLimit'), 'RateLimit-Policy': header('RateLimit-Policy') })
/** The way in, on a 401 AOG_GRANT_REQUIRED. */
const grantHeaders = (): Json => ({ 'WWW-Authenticate': header('WWW-Authenticate'), Link: header('Link') })

/** Codes every route can answer: the identity step, the store, the process. */
const COMMON: ErrorCode[] = ['AOG_IDENTITY_REQUIRED', 'AOG_NOT_AUTHORIZED', 'AOG_UNAVAILABLE']

/** Each route's own codes, beyond COMMON. */
const OWN = {
  challenge: ['AOG_RATE_LIMITED', 'AOG_OVERLOADED'],
  task: ['AOG_BAD_REQUEST', 'AOG_FINGERPRINT_MISMATCH', 'AOG_ATTESTATION_INVALID', 'AOG_UNKNOWN_NONCE', 'AOG_NONCE_CONSUMED', 'AOG_DEADLINE_PASSED',
    'AOG_BODY_TOO_LARGE', 'AOG_UNSUPPORTED_MEDIA_TYPE', 'AOG_WRONG_RESULT', 'AOG_TRACE_MISMATCH', 'AOG_RUNTIME_IMPLAUSIBLE', 'AOG_RATE_LIMITED',
    'AOG_OVERLOADED', 'AOG_VERIFICATION_ABORTED'],
  auth: ['AOG_GRANT_REQUIRED', 'AOG_BAD_REQUEST', 'AOG_RATE_LIMITED'],
  protected: ['AOG_GRANT_REQUIRED', 'AOG_BAD_REQUEST', 'AOG_NOT_FOUND', 'AOG_BODY_TOO_LARGE', 'AOG_RATE_LIMITED', 'AOG_UPSTREAM_UNAVAILABLE',
    'AOG_OVERLOADED', 'AOG_UPSTREAM_TIMEOUT'],
} satisfies Record<string, ErrorCode[]>

/**
 * A code of the table that no list above names (a new one) is listed on every operation: the
 * document may then say too much about it, never too little. 405 is not: it answers a method that
 * no operation has (the paths' descriptions say so).
 */
const PLACED = new Set<string>([...COMMON, ...Object.values(OWN).flat(), 'AOG_METHOD_NOT_ALLOWED'])
const ALWAYS: ErrorCode[] = [...COMMON, ...(Object.keys(ERRORS) as ErrorCode[]).filter((c) => !PLACED.has(c))]

/** The codes a route can answer. */
const codesOf = (route: keyof typeof OWN): ErrorCode[] => [...ALWAYS, ...OWN[route]]

/** The problem+json content of an answer with `status` carrying one of `codes`. */
function problemContent (status: number, codes: ErrorCode[]): Json {
  const code = codes.length === 1 ? { const: codes[0] } : { enum: codes }
  const schema = { allOf: [ref('Problem'), { properties: { status: { const: status }, code } }] }
  return { 'application/problem+json': { schema } }
}

/** Headers of a refusal: Retry-After on 429 and 503, RateLimit on 429, the way in on 401 AOG_GRANT_REQUIRED. */
function refusalHeaders (status: number, codes: ErrorCode[]): Json | undefined {
  const h: Json = {}
  if (status === 429 || status === 503) h['Retry-After'] = header('Retry-After')
  if (status === 429) Object.assign(h, rateLimitHeaders())
  if (codes.includes('AOG_GRANT_REQUIRED')) Object.assign(h, grantHeaders())
  return Object.keys(h).length === 0 ? undefined : h
}

/** One response per status of `codes` (each code answered with its own status). */
function refusals (codes: ErrorCode[]): Json {
  const byStatus = new Map<number, ErrorCode[]>()
  for (const c of codes) byStatus.set(ERRORS[c].status, [...byStatus.get(ERRORS[c].status) ?? [], c])
  const out: Json = {}
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const headers = refusalHeaders(status, list)
    out[String(status)] = {
      description: list.map((c) => `${c}: ${ERRORS[c].title}`).join('; '),
      ...(headers === undefined ? {} : { headers }),
      content: problemContent(status, list),
    }
  }
  return out
}

/** 417: an Expect other than 100-continue (a request with a body). */
const EXPECTATION_FAILED = {
  417: {
    description: 'AOG_BAD_REQUEST: only Expect: 100-continue is supported (the connection is closed)',
    content: problemContent(417, ['AOG_BAD_REQUEST']),
  },
}

/** A pass's 200: its JSON body, and the identity's bucket in RateLimit. */
function passed (description: string, schema: string): Json {
  return { description, headers: rateLimitHeaders(), content: { 'application/json': { schema: ref(schema) } } }
}

/**
 * GET /auth's answers: `allowed` with X-AOG-Agent, or a refusal as 401 or 403 only (what a reverse
 * proxy's authorization subrequest can pass on), the code's own status in X-AOG-Status and the
 * code in X-AOG-Code.
 */
function authResponses (allowed: number, description: string): Json {
  const reshaped = (status: 401 | 403): Json => {
    const codes = codesOf('auth').filter((c) => (ERRORS[c].status === 401) === (status === 401))
    return {
      description: `${codes.join(', ')}: the body's status is ${status}; the code's own status is in X-AOG-Status`,
      headers: {
        'X-AOG-Code': header('X-AOG-Code'),
        'X-AOG-Status': header('X-AOG-Status'),
        ...(status === 401 ? grantHeaders() : { 'Retry-After': header('Retry-After'), ...rateLimitHeaders() }),
      },
      content: problemContent(status, codes),
    }
  }
  return {
    [allowed]: { description, headers: { 'X-AOG-Agent': header('X-AOG-Agent') } },
    401: reshaped(401),
    403: reshaped(403),
  }
}

const ORIGINAL = [
  { name: 'X-Original-Method', in: 'header', required: false, schema: { type: 'string', pattern: '^[A-Z]{1,16}$' }, description: 'The method of the request to authorize (nginx auth_request). X-Forwarded-Method (Traefik) is read when it is absent. Sent once: a repeated header is refused.' },
  { name: 'X-Original-URI', in: 'header', required: false, schema: { type: 'string', pattern: '^/' }, description: 'The request target to authorize (origin form). X-Forwarded-Uri (Traefik) is read when it is absent.' },
]

function version (): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version
}

/** The whole document, a fresh object on every call. */
export function openApiDocument (): Json {
  const taskResponse = plain(TaskResponse)
  // The grant is published once, under its own name; TaskResponse refers to it.
  ;(taskResponse.properties as Json).grant = ref('Grant')
  return {
    openapi: '3.1.0',
    info: {
      title: 'AOG — the Agent-Only Access Gate',
      version: version(),
      summary: 'Lets only authorized autonomous agents through: mTLS identity and a one-time compute challenge.',
      description: [
        'An agent proves who it is with an X.509 client certificate (mutual TLS; behind nginx, the forwarded mode), fetches a one-time challenge',
        '(GET /challenge), computes the iterated SHA-256 chain of docs/protocol.md section 3 bound to its certificate\'s fingerprint and submits',
        'it (POST /task). A pass grants the identity access for a while: its requests to any path that is not the gate\'s own are then',
        'proxied to the protected application (direct mode, --upstream), or a reverse proxy asks GET /auth before each one. Without a live',
        'grant a protected request is refused with 401 AOG_GRANT_REQUIRED, which says how to get one.',
        '',
        'Every refusal is application/problem+json (RFC 9457) with a stable `code`; 429 and 503 carry Retry-After. The operations listener',
        '(/metrics, /healthz, /readyz, /.well-known/jwks.json: plain HTTP, for operators) is not part of this API.',
      ].join('\n'),
      license: { name: 'MIT', identifier: 'MIT' },
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    servers: [{ url: 'https://localhost:8443', description: 'The development gate (npm start, or the compose stack\'s nginx)' }],
    security: [{ agentCertificate: [] }],
    tags: [
      { name: 'pass', description: 'Passing the gate: the challenge and its answer (docs/protocol.md sections 2-4).' },
      { name: 'access', description: 'After the pass: protected requests and the authorization subrequest (docs/protocol.md section 7).' },
      { name: 'meta', description: 'This document.' },
    ],
    paths: {
      '/challenge': {
        get: {
          operationId: 'getChallenge',
          tags: ['pass'],
          summary: 'Fetch a one-time compute challenge',
          description: 'Takes a token from the identity\'s bucket (shared with POST /task). Other methods: 405 AOG_METHOD_NOT_ALLOWED.',
          responses: {
            200: passed('A challenge, bound to the caller\'s identity, to be answered before deadline_ts.', 'ChallengeResponse'),
            ...refusals(codesOf('challenge')),
          },
        },
      },
      '/task': {
        post: {
          operationId: 'postTask',
          tags: ['pass'],
          summary: 'Submit the solved challenge',
          description: 'Checks in order: rate limit, body, fingerprint, atomic claim of the nonce, deadline, plausibility of the runtime, the chain (full or sampled), the attestation. A pass opens (or extends) the identity\'s grant. Other methods: 405 AOG_METHOD_NOT_ALLOWED.',
          requestBody: { required: true, content: { 'application/json': { schema: ref('TaskBody') } } },
          responses: {
            200: passed('Accepted: the nonce is consumed and the identity holds a grant.', 'TaskResponse'),
            ...refusals(codesOf('task')),
            ...EXPECTATION_FAILED,
          },
        },
      },
      '/auth': {
        get: {
          operationId: 'getAuth',
          tags: ['access'],
          summary: 'Authorize a request for a reverse proxy (nginx auth_request, Traefik forwardAuth)',
          description: 'The decision a protected request gets, for the request named by X-Original-Method and X-Original-URI: identity and revocation, the identity\'s upstream bucket, its grant (counted). Served when the gate has --assertion-key. Refusals are 401 or 403 only, the real status and code in X-AOG-Status and X-AOG-Code.',
          parameters: ORIGINAL,
          responses: authResponses(204, 'Allowed.'),
        },
      },
      '/auth/{target}': {
        get: {
          operationId: 'getAuthEnvoy',
          tags: ['access'],
          summary: 'Authorize a request, Envoy ext_authz form (any method)',
          description: 'Envoy\'s HTTP ext_authz sends its check with the original method to path_prefix + the original path: any method on a path under /auth/ is a check of that method and of the target after /auth (X-Original-Method and X-Original-URI win when sent). Allowed answers 200 (Envoy allows on 200 only). Only GET is listed here; every method is answered the same way.',
          parameters: [{ name: 'target', in: 'path', required: true, schema: { type: 'string' }, description: 'The original path (and query) after /auth/; it may hold further / (OpenAPI path templates match one segment).' }, ...ORIGINAL],
          responses: authResponses(200, 'Allowed (empty body).'),
        },
      },
      '/{protectedPath}': {
        description: 'Every path that is not the gate\'s own (/challenge, /task, /auth, /.well-known/aog/…), any method, any depth, when the gate protects an upstream (--upstream). Allowed after a pass: proxied with X-AOG-Agent added and every client-sent X-AOG-* header removed; the upstream\'s answer is returned as it is, errors included. Only GET and POST are listed; every method is answered the same way.',
        parameters: [{ name: 'protectedPath', in: 'path', required: true, schema: { type: 'string' }, description: 'Any path (and query) of the protected application.' }],
        get: {
          operationId: 'protectedGet',
          tags: ['access'],
          summary: 'A protected request (GET), proxied once the identity holds a grant',
          responses: { default: { $ref: '#/components/responses/UpstreamAnswer' }, ...refusals(codesOf('protected')) },
        },
        post: {
          operationId: 'protectedPost',
          tags: ['access'],
          summary: 'A protected request (POST), its body streamed to the upstream',
          requestBody: { required: false, content: { '*/*': { schema: {} } } },
          responses: { default: { $ref: '#/components/responses/UpstreamAnswer' }, ...refusals(codesOf('protected')), ...EXPECTATION_FAILED },
        },
      },
      [OPENAPI_PATH]: {
        get: {
          operationId: 'getOpenApi',
          tags: ['meta'],
          summary: 'This document',
          responses: {
            200: { description: 'The OpenAPI 3.1 document of this API.', content: { 'application/json': { schema: { type: 'object' } } } },
            ...refusals(ALWAYS),
          },
        },
      },
    },
    components: {
      schemas: {
        ChallengeResponse: plain(ChallengeResponse),
        TaskBody: plain(TaskBody),
        TaskResponse: taskResponse,
        Grant: plain(Grant),
        Problem: plain(Problem),
      },
      responses: {
        UpstreamAnswer: { description: 'The protected application\'s own answer, passed on unchanged (any status, any media type).' },
      },
      headers: {
        'Retry-After': { description: 'Seconds to wait before trying again.', schema: { type: 'integer', minimum: 1 } },
        RateLimit: { description: 'The identity\'s bucket now (draft-ietf-httpapi-ratelimit-headers): "identity";r=REMAINING;t=SECONDS_UNTIL_FULL.', schema: { type: 'string' } },
        'RateLimit-Policy': { description: 'The identity\'s bucket policy: "identity";q=SIZE;w=SECONDS_TO_REFILL.', schema: { type: 'string' } },
        'WWW-Authenticate': { description: 'AOG challenge="/challenge": where the way in starts.', schema: { type: 'string', const: 'AOG challenge="/challenge"' } },
        Link: { description: 'The challenge endpoint, rel https://aog.dev/rel/challenge.', schema: { type: 'string' } },
        'X-AOG-Agent': { description: 'The gate\'s signed assertion of who called (a JWS: sub, htm, htu, cnf, grant_exp), verifiable with the gate\'s JWKS (the ops listener\'s /.well-known/jwks.json). Sent to the upstream on a protected request; returned by GET /auth for the proxy to forward.', schema: { type: 'string' } },
        'X-AOG-Code': { description: 'GET /auth refusals: the error code.', schema: { type: 'string' } },
        'X-AOG-Status': { description: 'GET /auth refusals: the code\'s own HTTP status (e.g. 429 under a 403).', schema: { type: 'string', pattern: '^[45][0-9]{2}$' } },
      },
      securitySchemes: {
        agentCertificate: {
          type: 'mutualTLS',
          description: 'An X.509 client certificate that chains to the gate\'s agent CA (behind nginx: verified by nginx and forwarded in signed X-AOG-* headers). Its SHA-256 fingerprint is the identity: the challenge, the rate limit and the grant are bound to it.',
        },
      },
    },
  }
}

let text: string | undefined

/** GET /.well-known/aog/openapi.json: the document (made once per process). */
export const getOpenApi: Handler = (ctx) => {
  text ??= JSON.stringify(openApiDocument())
  ctx.outcome = 'ok'
  ctx.send(200, jsonHeaders(text), text)
}
