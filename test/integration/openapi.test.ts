/**
 * The OpenAPI 3.1 document (lib/openapi.ts): valid for the OpenAPI 3.1 schema
 * (@seriousme/openapi-schema-validator), printed by `aog-server openapi`, served by its handler,
 * made of the very TypeBox schemas the gate validates with, and naming every error code.
 * Real answers of a running gate against it: test/integration/openapi-contract.test.ts.
 */
import t from 'tap'
import { Validator } from '@seriousme/openapi-schema-validator'
import { openApiDocument, getOpenApi, OPENAPI_PATH } from '../../lib/openapi.js'
import { ChallengeResponse, Grant, Problem, TaskBody, TaskResponse, ERROR_CODES } from '../../lib/protocol/schemas.js'
import { ERRORS } from '../../lib/errors.js'
import type { GateParts, RequestContext } from '../../lib/handlers/context.js'
import { SERVER, run } from '../helpers/spawn.js'

type Json = Record<string, any>
const plain = (s: object): Json => JSON.parse(JSON.stringify(s)) as Json

t.test('the document is valid OpenAPI 3.1', async (t) => {
  const v = new Validator()
  const r = await v.validate(openApiDocument())
  t.same(r.errors, undefined, 'no errors')
  t.equal(r.valid, true, 'valid')
  t.equal(v.version, '3.1', 'checked as 3.1')
  // The validator has teeth: a broken document is refused.
  const broken = openApiDocument()
  ;(broken.paths as Json)['/task'].post.responses['200'].content['application/json'].schema = { $ref: '#/components/schemas/Nope' }
  t.equal((await new Validator().validate(broken)).valid, false, 'a dangling $ref is refused')
})

t.test('aog-server openapi prints it; extra arguments exit 2', async (t) => {
  const out = await run(SERVER, ['openapi'])
  t.equal(out.code, 0, out.stderr)
  t.same(JSON.parse(out.stdout), openApiDocument())
  const bad = await run(SERVER, ['openapi', '--yaml'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /takes no arguments/)
  const help = await run(SERVER, ['--help'])
  t.match(help.stdout, /aog-server openapi/, 'the help names it')
})

t.test('GET /.well-known/aog/openapi.json\'s handler answers the document as JSON', async (t) => {
  let sent: { status: number, headers: string[], body: string } | undefined
  const ctx = { outcome: 'unknown', send (status: number, headers: string[], body: string) { sent = { status, headers, body } } } as unknown as RequestContext
  for (let i = 0; i < 2; i++) {
    await getOpenApi(ctx, {} as GateParts)
    t.equal(sent?.status, 200)
    t.same(JSON.parse(sent!.body), openApiDocument(), i === 0 ? 'the document' : 'the same again (made once)')
  }
  const h = sent!.headers
  t.equal(h[h.indexOf('content-type') + 1], 'application/json')
  t.equal(h[h.indexOf('content-length') + 1], String(Buffer.byteLength(sent!.body)))
  t.equal(h[h.indexOf('cache-control') + 1], 'no-store')
  t.equal(ctx.outcome, 'ok')
  t.ok((openApiDocument().paths as Json)[OPENAPI_PATH], 'the document lists its own path')
})

t.test('its schemas are the gate\'s TypeBox schemas, not a copy of them', async (t) => {
  const s = (openApiDocument().components as Json).schemas as Json
  t.same(s.ChallengeResponse, plain(ChallengeResponse))
  t.same(s.TaskBody, plain(TaskBody))
  t.same(s.Grant, plain(Grant))
  t.same(s.Problem, plain(Problem))
  t.same(s.TaskResponse.properties.grant, { $ref: '#/components/schemas/Grant' }, 'TaskResponse refers to Grant')
  t.same({ ...s.TaskResponse, properties: { ...s.TaskResponse.properties, grant: plain(Grant) } }, plain(TaskResponse), 'and is TaskResponse otherwise')
  t.equal(s.TaskBody.additionalProperties, false, 'unknown fields of POST /task are refused, as the gate refuses them')
})

t.test('every error code is in the document, each under its own status', async (t) => {
  const doc = openApiDocument()
  t.same(ERROR_CODES, Object.keys(ERRORS))
  t.same(((doc.components as Json).schemas.Problem.properties.code.anyOf as Json[]).map((c) => c.const), ERROR_CODES, 'Problem.code: the whole table')
  const seen = new Map<string, Set<string>>()
  for (const item of Object.values(doc.paths as Json)) {
    for (const op of Object.values(item as Json)) {
      if (typeof op !== 'object' || op === null || !('responses' in op)) continue
      for (const [status, res] of Object.entries((op as Json).responses as Json)) {
        const schema = (res as Json).content?.['application/problem+json']?.schema
        if (schema === undefined) continue
        const code = schema.allOf[1].properties.code
        for (const c of (code.enum ?? [code.const]) as string[]) seen.set(c, (seen.get(c) ?? new Set()).add(status))
      }
    }
  }
  for (const c of ERROR_CODES) {
    // 405 answers a method no operation has: it can only be told in the paths' descriptions.
    if (c === 'AOG_METHOD_NOT_ALLOWED') continue
    t.ok(seen.has(c), `${c} is answered somewhere`)
    // Under its own status, but for GET /auth (401/403 only) and 417 (Expect).
    t.ok(seen.get(c)?.has(String(ERRORS[c as keyof typeof ERRORS].status)) === true, `${c} under ${ERRORS[c as keyof typeof ERRORS].status}`)
  }
  const grant = (doc.paths as Json)['/{protectedPath}'].get.responses['401']
  t.ok(grant.headers['WWW-Authenticate'] && grant.headers.Link, 'the protected requests\' 401 says where the way in is')
  t.match(grant.description, /AOG_GRANT_REQUIRED/)
})
