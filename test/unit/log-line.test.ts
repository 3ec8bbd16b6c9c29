import t from 'tap'
import fc from 'fast-check'
import { pino, type DestinationStream } from 'pino'
import { Writable } from 'node:stream'
import { createLogger, REDACTED_FIELDS } from '../../lib/log.js'
import { hundredths, jsonText, lineFields, LINE_KEYS, requestLineWriter, type RequestLine } from '../../lib/log-line.js'
import type { Identity } from '../../lib/identity/tls.js'
import { LineBatch } from '../../lib/log-batch.js'

/** Where the lines go: a plain stream, or the buffered destination (lines gathered as UTF-8, a batch at a time). */
type Mode = 'text' | 'bytes'

function sink (mode: Mode = 'text', batchBytes = 4096): { destination: DestinationStream, lines: string[], flush: () => void } {
  const lines: string[] = []
  if (mode === 'text') return { destination: new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } }), lines, flush: () => {} }
  // A SonicBoom stand-in: what it is given, split into lines when flushed.
  let given: Buffer[] = []
  const sonic = {
    write: (data: string) => { given.push(data as unknown as Buffer); return true },
    flush: () => {},
    flushSync: () => {
      for (const l of Buffer.concat(given).toString('utf8').split('\n')) if (l !== '') lines.push(`${l}\n`)
      given = []
    },
  }
  const batch = new LineBatch(sonic, batchBytes)
  return { destination: batch, lines, flush: () => { batch.flushSync() } }
}

/** The writer's line and logger.info's line of lineFields(r), their times made equal. */
function both (r: RequestLine, mode: Mode = 'text', level = 'info'): [string | undefined, string | undefined] {
  const s = sink(mode)
  const logger = createLogger({ level, destination: s.destination })
  requestLineWriter(logger)(r)
  logger.info(lineFields(r), 'request')
  s.flush()
  const [a, b] = s.lines
  const time = /"time":\d+/
  return [a, b === undefined || a === undefined ? b : b.replace(time, a.match(time)![0])]
}

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

const AGENT: Identity = { fingerprint: '0123456789abcdef'.repeat(4), serial: '01', subject: 'agent-1', uri: 'spiffe://aog/agent/1', source: 'tls' }

const REQUEST: RequestLine = {
  reqId: '3fa2c1000000002a',
  addr: '127.0.0.1',
  clientAddr: undefined,
  identity: AGENT,
  method: 'GET',
  route: '/challenge',
  path: undefined,
  status: 200,
  ms: 0.3712,
  outcome: 'ok',
  upstream: undefined,
}

for (const mode of ['text', 'bytes'] as const) {
  t.test(`a createLogger logger (${mode}): the same bytes as logger.info, field for field`, async (t) => {
    const [line, info] = both(REQUEST, mode)
    t.equal(line, info)
    t.match(JSON.parse(line!), { level: 30, service: 'aog', reqId: REQUEST.reqId, fp: '0123456789abcdef', subject: 'agent-1', status: 200, durationMs: 0.37, msg: 'request' })
    t.notOk('clientAddr' in JSON.parse(line!), 'undefined fields are left out, as pino leaves them out')
    const cases: Array<Partial<RequestLine>> = [
      { path: 'a "quoted" \\ back\\slash', route: 'unmatched' },
      { identity: { ...AGENT, subject: 'tab\tnewline\nnul\u0000 del\u007f' } },
      { identity: { ...AGENT, subject: 'accents é ü, emoji 😀, CJK 漢字', uri: '' } },
      { identity: { ...AGENT, subject: '', uri: '' } },
      { identity: { fingerprint: 'ab'.repeat(32), serial: '', subject: 'key-1', uri: 'https://dir.example/.well-known/http-message-signatures-directory', source: 'signature' } },
      { identity: { fingerprint: 'ab'.repeat(32), serial: '', subject: 'key-1', uri: '', source: 'signature' } },
      { identity: undefined, addr: undefined, clientAddr: '203.0.113.9' },
      { route: '"'.repeat(60), outcome: 'z'.repeat(6000), method: 'M-SEARCH' },
      { status: 0, ms: -1.5, upstream: { status: Number.NaN, ms: 1e21 } },
      { status: 502, upstream: { status: 502, ms: 12.25 } },
      { ms: 1e13 }, { ms: 1e14 }, { ms: Number.NaN }, { ms: Infinity }, { ms: -0.001 }, { ms: 0.005 }, { ms: 0.015 }, { ms: 1.005 },
    ]
    for (const c of cases) {
      const [a, b] = both({ ...REQUEST, ...c }, mode)
      t.equal(a, b, JSON.stringify(c).slice(0, 60))
    }
  })
}

for (const mode of ['text', 'bytes'] as const) {
  t.test(`an identity's fields are written once per identity (${mode}): a later line of the same identity is unchanged, another identity gets its own`, async (t) => {
    const s = sink(mode)
    const write = requestLineWriter(createLogger({ destination: s.destination }))
    const other: Identity = { ...AGENT, fingerprint: 'fe'.repeat(32), subject: 'agent-2' }
    write(REQUEST)
    write({ ...REQUEST, identity: other })
    write(REQUEST)
    s.flush()
    const parsed = s.lines.map((l) => JSON.parse(l))
    t.match(parsed, [{ fp: '0123456789abcdef', subject: 'agent-1' }, { fp: 'fefefefefefefefe', subject: 'agent-2' }, { fp: '0123456789abcdef', subject: 'agent-1' }])
  })
}

t.test('no field of the line is one pino would censor (else every line would go through logger.info)', async (t) => {
  for (const k of LINE_KEYS) t.notOk(REDACTED_FIELDS.has(k), k)
  t.same(Object.keys(lineFields({ ...REQUEST, identity: { ...AGENT, source: 'signature' }, clientAddr: 'x', path: 'p', upstream: { status: 1, ms: 1 } })).sort(), [...LINE_KEYS].sort())
})

t.test('hundredths: the text of Math.round(ms * 100) / 100, for any duration', async () => {
  const expected = (ms: number): string => JSON.stringify(Math.round(ms * 100) / 100)
  fc.assert(fc.property(fc.oneof(fc.double(), fc.double({ min: 0, max: 1e6 }), fc.double({ min: 0, max: 100 }), fc.integer({ min: 0, max: 1e9 }).map((h) => h / 100)), (ms) => {
    if (hundredths(ms) !== expected(ms)) throw new Error(`${ms}: ${hundredths(ms)} !== ${expected(ms)}`)
  }), { numRuns: 20000 })
  for (let h = 0; h < 100000; h++) if (hundredths(h / 100) !== expected(h / 100)) throw new Error(`${h / 100}`)
})

for (const mode of ['text', 'bytes'] as const) {
  t.test(`property (${mode}): any well-formed text and any number give the bytes logger.info gives`, async () => {
    const text = fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 60 }))
    const maybe = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(a, { nil: undefined })
    const identity: fc.Arbitrary<Identity | undefined> = maybe(fc.record({
      fingerprint: fc.stringMatching(/^[0-9a-f]{64}$/),
      serial: fc.constant(''),
      subject: text,
      uri: text,
      source: fc.constantFrom('tls' as const, 'forwarded' as const, 'signature' as const),
    }))
    const number = fc.oneof(fc.double(), fc.integer())
    fc.assert(fc.property(
      fc.record({ reqId: text, addr: maybe(text), clientAddr: maybe(text), identity, method: text, route: text, path: maybe(text), status: number, ms: number, outcome: text, upstream: maybe(fc.record({ status: number, ms: number })) }),
      (r) => {
      // pino writes a lone surrogate of a short string raw; the writer escapes it (see below).
        if (Object.values(lineFields(r)).some((v) => typeof v === 'string' && LONE_SURROGATE.test(v))) return
        const [a, b] = both(r, mode)
        if (a !== b) throw new Error(`${String(a)} !== ${String(b)}`)
      }), { numRuns: 2000 })
  })
}

t.test('jsonText: JSON.stringify\'s text of any string (printable ASCII kept as it is)', async () => {
  fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii' })), (s) => {
    if (jsonText(s) !== JSON.stringify(s)) throw new Error(JSON.stringify(s))
  }), { numRuns: 5000 })
})

t.test('a lone surrogate: escaped (pino writes it raw, which UTF-8 turns into U+FFFD); the line is still JSON of the same text', async (t) => {
  for (const mode of ['text', 'bytes'] as const) {
    const [a] = both({ ...REQUEST, identity: { ...AGENT, subject: 'x\ud800y' } }, mode)
    t.match(a, /"subject":"x\\ud800y"/)
    t.equal(JSON.parse(a!).subject, 'x\ud800y')
  }
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
  logger.info(lineFields(REQUEST), 'request')
  t.equal(s.lines[1], s.lines[2]!.replace(/"time":\d+/, s.lines[1]!.match(/"time":\d+/)![0]), 'bindings set later are in the line')
})

t.test('any other pino logger: the line is logger.info\'s, shaped by that logger (formatters, redaction, message key)', async (t) => {
  const s = sink()
  const host = pino({ messageKey: 'message', formatters: { level: (label) => ({ severity: label }) }, redact: ['subject'] }, s.destination)
  requestLineWriter(host)(REQUEST)
  const line = JSON.parse(s.lines[0]!)
  t.match(line, { severity: 'info', message: 'request', subject: '[Redacted]', reqId: REQUEST.reqId })
  t.notOk('level' in line, 'the host\'s level formatter applied')
})

t.test('the buffered destination: request lines and pino\'s own lines keep their order across many batches, oversized ones included', async (t) => {
  const s = sink('bytes', 1024)
  const logger = createLogger({ destination: s.destination })
  const write = requestLineWriter(logger)
  const expected: string[] = []
  for (let i = 0; i < 500; i++) {
    if (i % 7 === 0) { logger.info({ i }, 'other'); expected.push(`other ${i}`) }
    const big = i % 50 === 0
    write({ ...REQUEST, reqId: `r${i}`, outcome: big ? 'y'.repeat(3000) : 'ok' })
    expected.push(`request r${i}`)
  }
  s.flush()
  t.same(s.lines.map((l) => { const o = JSON.parse(l) as { msg: string, reqId?: string, i?: number }; return o.msg === 'request' ? `request ${o.reqId!}` : `${o.msg} ${o.i!}` }), expected)
})

for (const mode of ['text', 'bytes'] as const) {
  t.test(`property (${mode}): one writer, many lines drawn from few values (its kept parts reused and replaced), each the bytes logger.info gives`, async () => {
    const ids: Identity[] = [AGENT, { ...AGENT, subject: 'agent-2', fingerprint: 'cd'.repeat(32) }, { fingerprint: 'ef'.repeat(32), serial: '', subject: 'k1', uri: 'https://d.example/', source: 'signature' }]
    const line = fc.record({
      reqId: fc.constantFrom('r1', 'r2', 'a"b'),
      addr: fc.constantFrom(undefined, '127.0.0.1', '::1'),
      clientAddr: fc.constantFrom(undefined, '203.0.113.9'),
      identity: fc.constantFrom(undefined, ...ids),
      method: fc.constantFrom('GET', 'POST'),
      route: fc.constantFrom('/challenge', '/task', 'unmatched'),
      path: fc.constantFrom(undefined, '/x', 'é'),
      status: fc.constantFrom(200, 401, 429),
      ms: fc.double({ min: 0, max: 50, noNaN: true }),
      outcome: fc.constantFrom('ok', 'AOG_RATE_LIMITED', 'ünicode'),
      upstream: fc.constantFrom(undefined, { status: 200, ms: 1.5 }),
    })
    fc.assert(fc.property(fc.array(fc.tuple(line, fc.constantFrom(undefined, 'a', 'b')), { minLength: 1, maxLength: 40 }), (lines) => {
      const s = sink(mode)
      const logger = createLogger({ destination: s.destination })
      const write = requestLineWriter(logger)
      for (const [r, instance] of lines) {
        // Bindings changed between lines: the kept head follows them.
        if (instance !== undefined) logger.setBindings({ instance })
        write(r)
        logger.info(lineFields(r), 'request')
      }
      s.flush()
      const time = /"time":\d+/
      for (let i = 0; i < s.lines.length; i += 2) {
        const a = s.lines[i]!
        const b = s.lines[i + 1]!.replace(time, a.match(time)![0])
        if (a !== b) throw new Error(`${a} !== ${b}`)
      }
      if (s.lines.length !== 2 * lines.length) throw new Error(`${s.lines.length} lines for ${lines.length}`)
    }), { numRuns: 300 })
  })
}
