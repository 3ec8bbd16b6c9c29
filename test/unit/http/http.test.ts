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
  t.same(r.find('GET', '/a?x=1'), { route: '/a', handler: 'a' })
  t.throws(() => r.find('HEAD', '/a'), { code: 'AOG_METHOD_NOT_ALLOWED' }, 'no implicit HEAD: GET may have side effects')
  t.throws(() => r.find('GET', '/c'), { code: 'AOG_NOT_FOUND' })
  try {
    r.find('GET', '/b')
    t.fail('expected 405')
  } catch (err) {
    t.type(err, AogError)
    t.match(err, { code: 'AOG_METHOD_NOT_ALLOWED', status: 405, headers: { allow: 'POST' } })
  }
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
