import t from 'tap'
import fc from 'fast-check'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { createLogger } from '../../lib/log.js'
import { requestLineWriter, type LineFields } from '../../lib/log-line.js'

function sink (): { destination: Writable, lines: string[] } {
  const lines: string[] = []
  return { destination: new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } }), lines }
}

/** The writer's line and logger.info's line for the same fields, their times made equal. */
function both (fields: LineFields, level = 'info'): [string | undefined, string | undefined] {
  const s = sink()
  const logger = createLogger({ level, destination: s.destination })
  requestLineWriter(logger)(fields)
  logger.info(fields, 'request')
  const [a, b] = s.lines
  const time = /"time":\d+/
  return [a, b === undefined || a === undefined ? b : b.replace(time, a.match(time)![0])]
}

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

const REQUEST: LineFields = {
  reqId: '3fa2c1-000000002a',
  addr: '127.0.0.1',
  clientAddr: undefined,
  fp: '0123456789abcdef',
  subject: 'agent-1',
  uri: 'spiffe://aog/agent/1',
  keyid: undefined,
  directory: undefined,
  method: 'GET',
  route: '/challenge',
  path: undefined,
  status: 200,
  durationMs: 0.37,
  outcome: 'ok',
  upstreamStatus: undefined,
  upstreamMs: undefined,
}

t.test('a createLogger logger: the same bytes as logger.info, field for field', async (t) => {
  const [line, info] = both(REQUEST)
  t.equal(line, info)
  t.match(JSON.parse(line!), { level: 30, service: 'aog', reqId: REQUEST.reqId, status: 200, durationMs: 0.37, msg: 'request' })
  t.notOk('clientAddr' in JSON.parse(line!), 'undefined fields are left out, as pino leaves them out')
  const cases: LineFields[] = [
    { path: 'a "quoted" \\ back\\slash' },
    { subject: 'tab\tnewline\nnul\u0000 del\u007f' },
    { subject: 'accents é ü, emoji 😀, CJK 漢字' },
    { uri: 'x'.repeat(41), path: 'y'.repeat(42), route: '"'.repeat(60), outcome: 'z'.repeat(6000) },
    { status: 0, durationMs: -1.5, upstreamMs: 1e21, upstreamStatus: Number.NaN, n: Infinity, m: -Infinity },
    {},
  ]
  for (const fields of cases) {
    const [a, b] = both(fields)
    t.equal(a, b, JSON.stringify(fields).slice(0, 60))
  }
})

t.test('property: any well-formed text and any number give the bytes logger.info gives', async () => {
  fc.assert(fc.property(
    fc.dictionary(fc.constantFrom('reqId', 'addr', 'subject', 'uri', 'path', 'route', 'outcome', 'status', 'durationMs'),
      fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 60 }), fc.double(), fc.integer(), fc.constant(undefined))),
    (fields) => {
      // pino writes a lone surrogate of a short string raw; the writer escapes it (see below).
      if (Object.values(fields).some((v) => typeof v === 'string' && LONE_SURROGATE.test(v))) return
      const [a, b] = both(fields)
      if (a !== b) throw new Error(`${String(a)} !== ${String(b)}`)
    }), { numRuns: 2000 })
})

t.test('a lone surrogate: escaped (pino writes it raw, which UTF-8 turns into U+FFFD); the line is still JSON of the same text', async (t) => {
  const [a] = both({ subject: 'x\ud800y' })
  t.match(a, /"subject":"x\\ud800y"/)
  t.equal(JSON.parse(a!).subject, 'x\ud800y')
})

t.test('below the logger\'s level nothing is written; a level changed later is followed', async (t) => {
  const s = sink()
  const logger = createLogger({ level: 'warn', destination: s.destination })
  const write = requestLineWriter(logger)
  write(REQUEST)
  t.same(s.lines, [])
  logger.level = 'info'
  write(REQUEST)
  t.equal(s.lines.length, 1)
  logger.setBindings({ instance: 'b' })
  write(REQUEST)
  logger.info(REQUEST, 'request')
  t.equal(s.lines[1], s.lines[2]!.replace(/"time":\d+/, s.lines[1]!.match(/"time":\d+/)![0]), 'bindings set later are in the line')
})

t.test('a field pino would censor goes through pino (redacted)', async (t) => {
  const [a, b] = both({ ...REQUEST, token: 'secret-token' })
  t.equal(a, b)
  t.match(a, /"token":"\[redacted\]"/)
  t.notMatch(a, /secret-token/)
})

t.test('any other pino logger: the line is logger.info\'s, shaped by that logger (formatters, redaction, message key)', async (t) => {
  const s = sink()
  const host = pino({ messageKey: 'message', formatters: { level: (label) => ({ severity: label }) }, redact: ['subject'] }, s.destination)
  requestLineWriter(host)(REQUEST)
  const line = JSON.parse(s.lines[0]!)
  t.match(line, { severity: 'info', message: 'request', subject: '[Redacted]', reqId: REQUEST.reqId })
  t.notOk('level' in line, 'the host\'s level formatter applied')
})
