/** problemJson under a status HTTP fixes (408, 417) and the raw response of the listener's clientError. */
import t from 'tap'
import { AogError } from '../../../lib/errors.js'
import { problemJson, rawProblemResponse } from '../../../lib/http/reply.js'

t.test('a status other than the code\'s own is written, and does not change the code\'s cached body', async (t) => {
  const e = new AogError('AOG_BAD_REQUEST', 'only Expect: 100-continue is supported')
  t.same(JSON.parse(problemJson(e)), { type: 'urn:aog:problem:aog-bad-request', title: 'Bad request', status: 400, detail: e.detail, code: 'AOG_BAD_REQUEST' })
  t.equal(JSON.parse(problemJson(e, undefined, 417)).status, 417)
  t.equal(JSON.parse(problemJson(e)).status, 400, 'the 400 body afterwards')
  const fresh = new AogError('AOG_NOT_FOUND', 'x')
  t.equal(JSON.parse(problemJson(fresh, undefined, 410)).status, 410, 'an override as the first use of a code')
  t.equal(JSON.parse(problemJson(fresh)).status, 404, 'is not cached as the code\'s body')
})

t.test('the raw response: status line, the headers of every refusal, Connection: close, the exact body length', async (t) => {
  const raw = rawProblemResponse(new AogError('AOG_BAD_REQUEST', 'request timed out'), 408, 'abc123')
  const [head, body] = raw.split('\r\n\r\n') as [string, string]
  const lines = head.split('\r\n')
  t.equal(lines[0], 'HTTP/1.1 408 Request Timeout')
  const headers = Object.fromEntries(lines.slice(1).map((l) => l.split(': ') as [string, string]))
  t.same(headers, {
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'content-type': 'application/problem+json',
    'content-length': String(Buffer.byteLength(body)),
    'x-request-id': 'abc123',
    connection: 'close',
  })
  t.same(JSON.parse(body), { type: 'urn:aog:problem:aog-bad-request', title: 'Bad request', status: 408, detail: 'request timed out', code: 'AOG_BAD_REQUEST' })
  const ids = [0, 1, 2].map(() => /\r\nx-request-id: ([0-9a-f]{16})\r\n/.exec(rawProblemResponse(new AogError('AOG_BAD_REQUEST', 'x')))?.[1])
  t.equal(new Set(ids).size, 3, 'without one given: a fresh 16-hex id each time')
})
