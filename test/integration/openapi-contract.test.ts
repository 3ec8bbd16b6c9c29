/**
 * Contract: real answers of running gates conform to the OpenAPI document. For each answer, the
 * document's response for its path, method and status must exist; its body must validate (ajv,
 * JSON Schema 2020-12) against that response's schema for the answer's media type; the headers the
 * response declares must match their schemas when sent; an answer without content must be empty.
 * Provoked: the challenge, an accepted task with its grant, every problem+json code a test can
 * bring about (below), GET /auth (both forms) and the protected requests.
 * The document is fetched from the gate (GET /.well-known/aog/openapi.json) once lib/gate/index.ts
 * wires the route; until then it is openApiDocument() itself.
 */
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { startGate, type TestGate } from '../helpers/gate.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { DEV, ROOT, agentFiles, pem } from '../helpers/pki.js'
import { certificateFingerprint, getChallenge, solve } from '../../lib/client/agent.js'
import { openApiDocument, OPENAPI_PATH } from '../../lib/openapi.js'
import { failingStore } from '../helpers/failing-store.js'
import type { ErrorCode } from '../../lib/errors.js'
import type { TaskBody } from '../../lib/protocol/schemas.js'

type Json = Record<string, any>

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, text: string }

const FP = certificateFingerprint(pem('agent.pem'))
const WIRED = readFileSync(join(ROOT, 'lib', 'gate', 'index.ts'), 'utf8').includes('getOpenApi')

/** Every code an answer below carried, for the closing check. */
const provoked = new Set<string>()

class Contract {
  readonly ajv = new Ajv2020({ strict: false, allErrors: true })
  constructor (readonly doc: Json) {
    this.ajv.addSchema(doc, 'openapi.json')
  }

  /** `#/a/b` of the document. */
  resolve (obj: Json): Json {
    if (typeof obj.$ref !== 'string') return obj
    return (obj.$ref as string).slice(2).split('/').reduce<Json>((o, k) => o[k.replaceAll('~1', '/').replaceAll('~0', '~')], this.doc)
  }

  /** Check one answer of `method path` (a path of the document, templated) against it. */
  check (t: Test, path: string, method: string, a: Answer, name: string): void {
    const op = this.doc.paths[path]?.[method]
    if (op === undefined) { t.fail(`${name}: ${method.toUpperCase()} ${path} is not in the document`); return }
    const declared = op.responses[String(a.status)] ?? op.responses.default
    if (declared === undefined) { t.fail(`${name}: ${method.toUpperCase()} ${path} has no response ${a.status}`, { body: a.text }); return }
    const res = this.resolve(declared)
    const type = String(a.headers['content-type'] ?? '').split(';')[0]!.trim()
    if (res.content === undefined) {
      // The upstream's own answer (default) is anything; the gate's own answers without content are empty.
      if (declared === op.responses.default) t.pass(`${name}: ${a.status}, the upstream's answer`)
      else t.equal(a.text, '', `${name}: ${a.status} without content`)
    } else {
      const media = res.content[type]
      if (media === undefined) { t.fail(`${name}: ${a.status} as ${type} is not in the document (${Object.keys(res.content).join(', ')})`); return }
      const pointer = `openapi.json#/paths/${path.replaceAll('~', '~0').replaceAll('/', '~1')}/${method}/responses/${declared === op.responses.default ? 'default' : String(a.status)}/content/${type.replaceAll('/', '~1')}/schema`
      const validate = this.ajv.getSchema(pointer)!
      const body = JSON.parse(a.text) as Json
      t.ok(validate(body), `${name}: ${method.toUpperCase()} ${path} ${a.status} ${type}${typeof body.code === 'string' ? ` ${body.code as string}` : ''} conforms`, { errors: validate.errors, body })
      if (typeof body.code === 'string') provoked.add(body.code)
    }
    for (const [h, hdef] of Object.entries((res.headers ?? {}) as Json)) {
      const value = a.headers[h.toLowerCase()]
      if (value === undefined) continue
      const schema = this.resolve(hdef).schema as Json
      const v = schema.type === 'integer' ? Number(value) : value
      t.ok(this.ajv.validate(schema, v), `${name}: header ${h}: ${String(value).slice(0, 60)}`, { errors: this.ajv.errors, value })
    }
  }
}

/** A raw request with a client certificate (node:https: any header, Expect included). */
async function send (url: string, path: string, opts: { method?: string, headers?: Record<string, string>, body?: string | Buffer, who?: 'agent' | 'agent2' } = {}): Promise<Answer> {
  const u = new URL(path, url)
  const files = agentFiles(opts.who ?? 'agent')
  return await new Promise((resolve, reject) => {
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { method: opts.method ?? 'GET', headers: opts.headers, cert: files.cert, key: files.key, ca: files.ca, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }))
    })
    req.on('error', reject)
    req.end(opts.body)
  })
}

const json = { 'content-type': 'application/json' }

async function documentOf (t: Test, g: TestGate): Promise<Json> {
  const served = await send(g.url, OPENAPI_PATH)
  if (WIRED) {
    t.equal(served.status, 200, `${OPENAPI_PATH} is served`)
    t.same(JSON.parse(served.text), openApiDocument(), 'the served document is openApiDocument()')
    const c = new Contract(JSON.parse(served.text) as Json)
    c.check(t, OPENAPI_PATH, 'get', served, 'the document itself')
    return JSON.parse(served.text) as Json
  }
  process.stderr.write(`!!! ${OPENAPI_PATH} is not wired in lib/gate/index.ts yet: the contract test checks openApiDocument() directly\n`)
  t.comment(`${OPENAPI_PATH} not wired yet (answered ${served.status}): checking openApiDocument()`)
  return openApiDocument()
}

t.test('a direct gate with an upstream: challenge, accepted task with its grant, task refusals, protected requests, GET /auth', async (t) => {
  const echo = await startEchoUpstream(t)
  const g = await startGate(t, { upstream: echo.url, assertionKey: join(DEV, 'assertion-key.pem'), upstreamTimeoutMs: 500, upstreamMaxBodyBytes: 1000 })
  const c = new Contract(await documentOf(t, g))
  const fresh = async (): Promise<TaskBody> => solve(await getChallenge(g.agent()), FP)
  const task = async (body: string, headers: Record<string, string> = json): Promise<Answer> => await send(g.url, '/task', { method: 'POST', headers, body })

  const ch = await send(g.url, '/challenge')
  c.check(t, '/challenge', 'get', ch, 'a challenge')
  t.equal(ch.status, 200)

  const body = await fresh()
  const ok = await task(JSON.stringify(body))
  c.check(t, '/task', 'post', ok, 'an accepted task')
  t.match(JSON.parse(ok.text), { status: 'accepted', grant: { expires_at: Number } }, 'with its grant')
  c.check(t, '/task', 'post', await task(JSON.stringify(body)), '409: the same nonce again')

  c.check(t, '/task', 'post', await task('{"nonce":1}'), '400: a bad body')
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...await fresh(), client_fingerprint: 'a'.repeat(64) })), '403: another fingerprint')
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...await fresh(), nonce: randomBytes(16).toString('base64url') })), '404: an unknown nonce')
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...await fresh(), checkpoints: undefined, trace_hash: undefined, pad: 'x'.repeat(200_000) })), '413: a body too large')
  c.check(t, '/task', 'post', await task(JSON.stringify(await fresh()), { 'content-type': 'text/plain' }), '415: not JSON')
  // Every checkpoint wrong, the trace hash made over them (so the trace matches): the chain does not verify.
  const wrong = await fresh()
  const checkpoints = wrong.checkpoints!.map((_, i) => createHash('sha256').update(`wrong ${i}`).digest('hex'))
  const trace = createHash('sha256').update(Buffer.concat(checkpoints.map((h) => Buffer.from(h, 'hex')))).digest('hex')
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...wrong, checkpoints, trace_hash: trace, result_hash: checkpoints.at(-1)! })), '422: a wrong result')
  const traced = await fresh()
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...traced, trace_hash: 'c'.repeat(64) })), '422: a trace mismatch')
  const slow = await fresh()
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...slow, runtime_ms: 86_000_000 })), '422: an implausible runtime')
  c.check(t, '/task', 'post', await task(JSON.stringify(await fresh()), { ...json, expect: 'something-else' }), '417: an Expect other than 100-continue')
  // An attestation to a gate that verifies none is refused, not ignored.
  const attested = await fresh()
  const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: FP, nonce: attested.nonce })).toString('base64url')}.`
  c.check(t, '/task', 'post', await task(JSON.stringify({ ...attested, attestation: unsigned })), '403: an attestation this gate cannot verify')
  // 405 answers a method no operation has: its body is still a Problem.
  const post = await send(g.url, '/challenge', { method: 'POST', headers: json, body: '{}' })
  t.equal(post.status, 405)
  const problem = c.ajv.getSchema('openapi.json#/components/schemas/Problem')!
  t.ok(problem(JSON.parse(post.text)), '405: POST /challenge answers a Problem', { errors: problem.errors })
  provoked.add((JSON.parse(post.text) as { code: string }).code)

  // Protected requests: allowed (the upstream's answer), no grant, too large, the upstream reset or silent, reserved paths.
  c.check(t, '/{protectedPath}', 'get', await send(g.url, '/hello'), 'a protected request after the pass')
  const noGrant = await send(g.url, '/hello', { who: 'agent2' })
  c.check(t, '/{protectedPath}', 'get', noGrant, '401: no grant')
  t.equal(noGrant.headers['www-authenticate'], 'AOG challenge="/challenge"')
  c.check(t, '/{protectedPath}', 'post', await send(g.url, '/upload', { method: 'POST', body: 'x'.repeat(2000), headers: { 'content-type': 'text/plain' } }), '413: a body over --upstream-max-body-bytes')
  c.check(t, '/{protectedPath}', 'get', await send(g.url, '/.well-known/aog/nothing'), '404: a reserved path')
  echo.handler = (req) => { req.socket.destroy() }
  c.check(t, '/{protectedPath}', 'get', await send(g.url, '/reset'), '502: the upstream reset the connection')
  echo.handler = () => { /* never answers */ }
  c.check(t, '/{protectedPath}', 'get', await send(g.url, '/silent'), '504: the upstream did not answer in time')
  echo.handler = undefined

  // GET /auth: allowed, no grant (401), missing headers (403, X-AOG-Status 400); Envoy's form.
  const original = { 'x-original-method': 'GET', 'x-original-uri': '/app/x?y=1' }
  const allowed = await send(g.url, '/auth', { headers: original })
  c.check(t, '/auth', 'get', allowed, '204: allowed')
  t.equal(allowed.status, 204)
  t.ok(allowed.headers['x-aog-agent'], 'with X-AOG-Agent')
  c.check(t, '/auth', 'get', await send(g.url, '/auth', { headers: original, who: 'agent2' }), '401: no grant')
  const bad = await send(g.url, '/auth')
  c.check(t, '/auth', 'get', bad, '403: no X-Original-*')
  t.equal(bad.headers['x-aog-status'], '400')
  const envoy = await send(g.url, '/auth/app/x?y=1')
  c.check(t, '/auth/{target}', 'get', envoy, '200: Envoy\'s form')
  t.equal(envoy.status, 200)
})

t.test('rate limits: GET /challenge, the protected requests and GET /auth answer 429 (or 403 with X-AOG-Status 429)', async (t) => {
  const echo = await startEchoUpstream(t)
  const g = await startGate(t, { rateBurst: 2, ratePerSecond: 0.01, upstreamRateBurst: 1, upstreamRatePerSecond: 0.01, upstream: echo.url, assertionKey: join(DEV, 'assertion-key.pem') })
  const c = new Contract(await documentOf(t, g))
  // agent: its two tokens for a pass, then one protected request, then 429 on everything.
  const body = solve(await getChallenge(g.agent()), FP)
  c.check(t, '/task', 'post', await send(g.url, '/task', { method: 'POST', headers: json, body: JSON.stringify(body) }), 'the pass')
  c.check(t, '/challenge', 'get', await send(g.url, '/challenge'), '429: GET /challenge')
  c.check(t, '/task', 'post', await send(g.url, '/task', { method: 'POST', headers: json, body: JSON.stringify(body) }), '429: POST /task')
  c.check(t, '/{protectedPath}', 'get', await send(g.url, '/one'), 'the one protected request of the bucket')
  const limited = await send(g.url, '/two')
  c.check(t, '/{protectedPath}', 'get', limited, '429: a protected request')
  t.ok(limited.headers['retry-after'] !== undefined && limited.headers.ratelimit !== undefined, 'with Retry-After and RateLimit')
  const auth = await send(g.url, '/auth', { headers: { 'x-original-method': 'GET', 'x-original-uri': '/x' } })
  c.check(t, '/auth', 'get', auth, '403: GET /auth rate limited')
  t.equal(auth.headers['x-aog-status'], '429')
})

t.test('deadline, a full store, a failing store, a denied identity', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-contract-'))
  writeFileSync(join(dir, 'deny'), certificateFingerprint(pem('agent2.pem')) + '\n')
  const { store, fail } = failingStore(3)
  const g = await startGate(t, { deadlineMs: 300, graceMs: 60_000, denyFile: join(dir, 'deny') }, { store })
  const c = new Contract(await documentOf(t, g))
  const late = solve(await getChallenge(g.agent()), FP)
  await new Promise((resolve) => setTimeout(resolve, 450))
  c.check(t, '/task', 'post', await send(g.url, '/task', { method: 'POST', headers: json, body: JSON.stringify(late) }), '410: past the deadline')
  c.check(t, '/challenge', 'get', await send(g.url, '/challenge', { who: 'agent2' }), '403: a denied identity')
  fail()
  const down = await send(g.url, '/challenge')
  c.check(t, '/challenge', 'get', down, '503: the store failed')
  t.equal(down.headers['retry-after'], '1')
  // The store holds 3 live challenges: 2 more, then it is full.
  for (let i = 0; i < 2; i++) t.equal((await send(g.url, '/challenge')).status, 200)
  c.check(t, '/challenge', 'get', await send(g.url, '/challenge'), '503: too many live challenges')
})

t.test('a verification that does not complete after the claim', async (t) => {
  // Full verification of 2^20 links on one worker, with 10 ms per task: the pool gives up.
  const g = await startGate(t, { iterations: 1_048_576, checkpointInterval: 1024, verify: 'full', taskTimeoutMs: 10, workers: 1 })
  const c = new Contract(openApiDocument())
  const body = solve(await getChallenge(g.agent()), FP)
  const a = await send(g.url, '/task', { method: 'POST', headers: json, body: JSON.stringify(body) })
  c.check(t, '/task', 'post', a, '503: the verification was aborted')
  t.equal(a.status, 503)
})

t.test('forwarded mode: a request without the signed identity', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-contract-'))
  writeFileSync(join(dir, 'secret'), randomBytes(24).toString('hex') + '\n')
  const g = await startGate(t, { mode: 'forwarded', forwardSecretFile: join(dir, 'secret') })
  const c = new Contract(openApiDocument())
  const a = await send(g.url.replace('https:', 'http:'), '/challenge')
  c.check(t, '/challenge', 'get', a, '401: no forwarded identity')
  t.equal(a.status, 401)
})

t.test('every provoked code', async (t) => {
  // The whole table of the committed protocol (lib/errors.ts at the time of writing).
  const expected: ErrorCode[] = ['AOG_BAD_REQUEST', 'AOG_IDENTITY_REQUIRED', 'AOG_GRANT_REQUIRED', 'AOG_FINGERPRINT_MISMATCH', 'AOG_ATTESTATION_INVALID', 'AOG_NOT_AUTHORIZED',
    'AOG_UNKNOWN_NONCE', 'AOG_NOT_FOUND', 'AOG_METHOD_NOT_ALLOWED', 'AOG_NONCE_CONSUMED', 'AOG_DEADLINE_PASSED', 'AOG_BODY_TOO_LARGE', 'AOG_UNSUPPORTED_MEDIA_TYPE',
    'AOG_WRONG_RESULT', 'AOG_TRACE_MISMATCH', 'AOG_RUNTIME_IMPLAUSIBLE', 'AOG_RATE_LIMITED', 'AOG_UPSTREAM_UNAVAILABLE', 'AOG_UNAVAILABLE', 'AOG_OVERLOADED',
    'AOG_VERIFICATION_ABORTED', 'AOG_UPSTREAM_TIMEOUT']
  t.same([...provoked].sort(), [...expected].sort(), `${expected.length} codes provoked and checked`)
})
