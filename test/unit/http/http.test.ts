import t from 'tap'
import { isJsonMediaType } from '../../../lib/http/body.js'
import { Router } from '../../../lib/http/router.js'
import { AogError } from '../../../lib/errors.js'
import { takeToken } from '../../../lib/stores/store.js'

t.test('only application/json (utf-8) is a JSON media type', async (t) => {
  t.ok(isJsonMediaType('application/json'))
  t.ok(isJsonMediaType('Application/JSON; charset=UTF-8'))
  t.notOk(isJsonMediaType(undefined))
  t.notOk(isJsonMediaType('application/json-patch+json'))
  t.notOk(isJsonMediaType('application/json; charset=utf-16'))
  t.notOk(isJsonMediaType('text/json'))
})

t.test('the router answers 404 for unknown paths and 405 with Allow for known ones', async (t) => {
  const r = new Router<string>().add('GET', '/a', 'a').add('POST', '/b', 'b')
  const into = { route: 'unmatched' }
  t.equal(r.find('GET', '/a?x=1', into), 'a')
  t.equal(into.route, '/a', 'the matched path, without the query')
  t.equal(r.find('POST', '/b'), 'b', 'no `into`: the handler alone')
  t.throws(() => r.find('HEAD', '/a'), { code: 'AOG_METHOD_NOT_ALLOWED' }, 'no implicit HEAD: GET may have side effects')
  const missing = { route: 'unmatched' }
  t.throws(() => r.find('GET', '/c', missing), { code: 'AOG_NOT_FOUND' })
  t.equal(missing.route, 'unmatched', 'an unknown path sets no route')
  const wrong = { route: 'unmatched' }
  try {
    r.find('GET', '/b', wrong)
    t.fail('expected 405')
  } catch (err) {
    t.type(err, AogError)
    t.match(err, { code: 'AOG_METHOD_NOT_ALLOWED', status: 405, headers: { allow: 'POST' } })
  }
  t.equal(wrong.route, '/b', 'a 405 still names its route (logs and metric labels)')
  r.add('get', '/a', 'a2').add('PUT', '/a', 'a3')
  t.equal(r.find('GET', '/a'), 'a2', 'a method added again replaces its handler (methods are upper-cased)')
  t.match(t.throws(() => r.find('DELETE', '/a')), { headers: { allow: 'GET, PUT' } }, 'Allow lists each method once, in the order added')
  t.throws(() => r.find('GET', '/a/'), { code: 'AOG_NOT_FOUND' }, 'paths match exactly')
  const routed = { route: '' }
  r.otherwise('upstream', 'fallback')
  t.equal(r.find('PATCH', '/anything/else?q', routed), 'fallback', 'with a fallback, unknown paths go to it, any method')
  t.equal(routed.route, 'upstream')
  t.match(t.throws(() => r.find('DELETE', '/a')), { code: 'AOG_METHOD_NOT_ALLOWED' }, 'a known path keeps its 405')
})

t.test('a path with a dot-segment or "#" matches no prefix route: 400, whatever else would have matched', async (t) => {
  const r = new Router<string>().add('GET', '/challenge', 'challenge').add('GET', '/auth', 'auth').under('/auth/', '/auth', 'envoy').otherwise('upstream', 'fallback')
  const into = { route: 'unmatched' }
  t.equal(r.find('DELETE', '/auth/orders/9?x=1', into), 'envoy', 'a plain path under the prefix')
  t.equal(into.route, '/auth')
  t.equal(r.find('GET', '/auth/a.b/c..d/...', into), 'envoy', 'dots inside names are no dot-segments')
  t.equal(r.find('GET', '/auth/x?next=/../y', into), 'envoy', 'the query is not the path')
  // A proxy in front that routes by the normalised path (nginx: location = /challenge) but passes
  // the raw target must not reach the prefix route with them.
  for (const path of ['/auth/../challenge', '/auth/x/../../.well-known/aog/z', '/auth/%2e%2e/task', '/auth/.', '/auth/./x', '/auth/..;/x',
    '/auth/..%2fchallenge', '/auth/x\\..\\y', '/auth/x#y', '/auth/..#', '/auth/%2E%2e?q=1']) {
    const seen = { route: 'unmatched' }
    t.match(t.throws(() => r.find('GET', path, seen)), { code: 'AOG_BAD_REQUEST', status: 400 }, `${path}: 400`)
    t.equal(seen.route, 'unmatched', `${path}: no route (a plain 400, not an /auth refusal)`)
  }
  t.equal(r.find('GET', '/challenge'), 'challenge', 'exact routes are unchanged')
  t.equal(r.find('GET', '/x/../auth/y'), 'fallback', 'the fallback checks its own targets (the proxy refuses dot-segments)')
})

t.test('the token bucket arithmetic', async (t) => {
  const spec = { burst: 2, perSecond: 4 }
  const a = takeToken(2, 0, 0, spec)
  t.match(a, { tokens: 1, admitted: true, rate: { remaining: 1, resetMs: 250, retryAfterMs: 0 } })
  const b = takeToken(0.5, 0, 0, spec)
  t.match(b, { admitted: false, rate: { remaining: 0, retryAfterMs: 125 } })
  const c = takeToken(0, 0, 10_000, spec)
  t.match(c, { tokens: 1, admitted: true }, 'refill is capped at the burst')
})

t.test('the GET /challenge body is the response object of the protocol', async (t) => {
  const { challengeJson } = await import('../../../lib/handlers/challenge.js')
  const { ChallengeResponse } = await import('../../../lib/protocol/schemas.js')
  const { TypeCompiler } = await import('@sinclair/typebox/compiler')
  const { randomBytes } = await import('node:crypto')
  const check = TypeCompiler.Compile(ChallengeResponse)
  for (let i = 0; i < 200; i++) {
    const issuedAt = Date.now() + Math.floor(i / 3) * 7919
    const c = {
      nonce: randomBytes(16).toString('base64url'),
      seed: randomBytes(32).toString('hex'),
      fingerprint: 'f'.repeat(64),
      iterations: 2 ** (10 + (Math.floor(i / 4) % 14)),
      checkpointInterval: 2 ** (4 + (Math.floor(i / 5) % 6)),
      issuedAt,
      deadline: issuedAt + 1 + Math.floor(i / 2) * 13,
    }
    const text = challengeJson(c)
    const object = { nonce: c.nonce, seed: c.seed, iterations: c.iterations, checkpoint_interval: c.checkpointInterval, algorithm: 'sha256-chain-v2', issued_at: c.issuedAt, deadline_ts: c.deadline }
    if (text !== JSON.stringify(object)) { t.equal(text, JSON.stringify(object)); return }
    if (!check.Check(JSON.parse(text))) { t.fail(`not a ChallengeResponse: ${text}`); return }
    // The handler sends text.length as its Content-Length.
    if (Buffer.byteLength(text) !== text.length) { t.fail(`not ASCII: ${text}`); return }
  }
  t.pass('200 random records: same bytes, valid ChallengeResponse, ASCII')
})

t.test('RateLimit headers follow the policy and the state of each call', async (t) => {
  const { rateHeaders } = await import('../../../lib/http/reply.js')
  const cases = [
    [{ limit: 20, remaining: 19, resetMs: 200, retryAfterMs: 0 }, 5, '"identity";q=20;w=4', '"identity";r=19;t=1'],
    [{ limit: 20, remaining: 3, resetMs: 3400, retryAfterMs: 0 }, 5, '"identity";q=20;w=4', '"identity";r=3;t=4'],
    [{ limit: 20, remaining: 3, resetMs: 3400, retryAfterMs: 0 }, 40, '"identity";q=20;w=1', '"identity";r=3;t=4'],
    [{ limit: 1000, remaining: 0, resetMs: 1001, retryAfterMs: 1 }, 40, '"identity";q=1000;w=25', '"identity";r=0;t=2'],
    [{ limit: 20, remaining: 19, resetMs: 200, retryAfterMs: 0 }, 5, '"identity";q=20;w=4', '"identity";r=19;t=1'],
  ] as const
  for (const [rate, perSecond, policy, state] of cases) {
    t.same(rateHeaders(rate, perSecond), { 'ratelimit-policy': policy, ratelimit: state }, `q=${rate.limit} at ${perSecond}/s`)
  }
})

t.test('the GET /challenge answer carries the fixed headers, the RateLimit headers and the body\'s length', async (t) => {
  const { BASE_HEADERS, jsonHeaders, rateHeaderList, rateHeaders } = await import('../../../lib/http/reply.js')
  const rate = { limit: 20, remaining: 7, resetMs: 2600, retryAfterMs: 0 }
  const text = '{"nonce":"abc","n":"é"}'
  const list = jsonHeaders(text, rateHeaderList(rate, 5))
  const headers: Record<string, string> = {}
  for (let i = 0; i < list.length; i += 2) headers[list[i]!] = list[i + 1]!
  t.equal(list.length / 2, Object.keys(headers).length, 'no header twice')
  t.same(headers, { ...BASE_HEADERS, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...rateHeaders(rate, 5) })
})

t.test('a problem body is the RFC 9457 object, for every code, without the private cause', async (t) => {
  const { problemJson } = await import('../../../lib/http/reply.js')
  const { ERRORS } = await import('../../../lib/errors.js')
  const details = [undefined, 'too many requests for this identity', 'a "quoted" \\ detail', 'non-ASCII: café ✓', 'control:\u0001\n\t', '']
  let n = 0
  for (const code of Object.keys(ERRORS) as Array<keyof typeof ERRORS>) {
    for (const detail of details) {
      for (const instance of [undefined, '/task', 'odd "instance" é']) {
        for (let k = 0; k < 2; k++) {
          const e = new AogError(code, detail, { retryAfter: 1, headers: { allow: 'GET' }, cause: new Error('private') })
          const expected = JSON.stringify({
            type: `urn:aog:problem:${code.toLowerCase().replace(/_/g, '-')}`,
            title: ERRORS[code].title,
            status: ERRORS[code].status,
            detail: detail ?? ERRORS[code].title,
            code,
            ...(instance === undefined ? {} : { instance }),
          })
          const text = problemJson(e, instance)
          if (text !== expected) { t.equal(text, expected); return }
          if (text.includes('private')) { t.fail('the private cause reached the body'); return }
          n++
        }
      }
    }
  }
  t.equal(n, Object.keys(ERRORS).length * details.length * 3 * 2, 'every code, detail and instance compared')
})

t.test('an AogError carries no stack trace and leaves Error.stackTraceLimit as it was', async (t) => {
  const before = Error.stackTraceLimit
  const e = new AogError('AOG_RATE_LIMITED', 'too many requests for this identity')
  t.equal(e.stack, 'AogError: too many requests for this identity', 'only its first line')
  t.equal(Error.stackTraceLimit, before)
  t.ok(e instanceof Error)
  const cause = new Error('private cause')
  const withCause = new AogError('AOG_UNAVAILABLE', undefined, { cause })
  t.equal(withCause.cause, cause)
  t.match(cause.stack, /\n\s+at /, 'other errors keep their stacks')
  t.match(new Error('after').stack, /\n\s+at /, 'and so do errors made after it')
})
