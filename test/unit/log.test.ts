import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { Writable } from 'node:stream'
import { createInterface } from 'node:readline'
import { cachedIsoTime, createLogger, jsonNumber, jsonString, LineBatch, requestLogger, type LineSink, type RequestLine } from '../../lib/log.js'

function capture (level = 'info'): { logger: ReturnType<typeof createLogger>, lines: string[] } {
  const lines: string[] = []
  const destination = new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } })
  // A pinned clock: the two loggers compared below must stamp the same millisecond.
  return { logger: createLogger({ level, destination, now: () => Date.UTC(2026, 10, 27, 5, 51, 1, 922) }), lines }
}

t.test('the hand-built request line is byte for byte what logger.info(fields, "request") writes', async (t) => {
  const samples: RequestLine[] = [
    { reqId: 'a1b2c30000000001', fp: '0123456789abcdef', method: 'GET', route: '/challenge', status: 200, durationMs: 0.42, outcome: 'ok' },
    { reqId: 'a1b2c30000000002', fp: undefined, method: 'POST', route: 'unmatched', status: 401, durationMs: 12, outcome: 'AOG_IDENTITY_REQUIRED' },
    { reqId: 'x"y\\z', fp: 'é\n', method: 'M-SEARCH', route: '/t\u0000', status: 503, durationMs: 1e-7, outcome: 'un"known' },
    { reqId: 'r', fp: '', method: '', route: '', status: 0, durationMs: Number.NaN, outcome: '' },
  ]
  for (const s of samples) {
    const a = capture()
    const b = capture()
    a.logger.info({ ...s }, 'request')
    requestLogger(b.logger)(s)
    t.equal(b.lines.length, 1)
    t.equal(b.lines[0], a.lines[0], `same bytes for ${JSON.stringify(s)}`)
    t.same(JSON.parse(b.lines[0]!).msg, 'request')
  }
})

t.test('through a LineBatch (ASCII lines written as bytes in pieces, others UTF-8 encoded) the request line is the same bytes', async (t) => {
  const samples: RequestLine[] = [
    { reqId: 'a1b2c30000000001', fp: '0123456789abcdef', method: 'GET', route: '/challenge', status: 200, durationMs: 0.42, outcome: 'ok' },
    { reqId: 'a1b2c30000000002', fp: undefined, method: 'POST', route: 'unmatched', status: 401, durationMs: 12, outcome: 'AOG_IDENTITY_REQUIRED' },
    { reqId: 'x"y\\z', fp: 'é\n', method: 'M-SEARCH', route: '/t\u0000', status: 503, durationMs: 1e-7, outcome: 'un"known' },
    { reqId: 'r', fp: '✓', method: 'GET', route: '/challenge', status: 200, durationMs: 3.5, outcome: 'ok' },
  ]
  const clock = (): number => Date.UTC(2026, 10, 27, 5, 51, 1, 922)
  let asciiLines = 0
  for (const s of samples) {
    const a = capture()
    a.logger.info({ ...s }, 'request')
    const out = sink()
    const batch = new LineBatch(out, 4096, 60_000)
    const wrote = batch.wrote.bind(batch)
    batch.wrote = (n) => { asciiLines++; wrote(n) }
    requestLogger(createLogger({ destination: batch, now: clock }))(s)
    batch.flushSync()
    t.equal(out.writes.join(''), a.lines[0], `same bytes for ${JSON.stringify(s)}`)
  }
  t.equal(asciiLines, 2, 'the two plain lines took the ASCII path, the others the UTF-8 one')
})

for (const limit of [1 << 20, 300]) {
t.test(`one request writer over a run of lines (its kept segments change and repeat) writes what logger.info writes (batches of ${limit} bytes)`, async (t) => {
  let now = Date.UTC(2026, 10, 27, 5, 51, 1, 922)
  const clock = (): number => now
  const pinoLines: string[] = []
  const reference = createLogger({ destination: new Writable({ write (chunk, _enc, cb) { pinoLines.push(String(chunk)); cb() } }), now: clock })
  const out = sink()
  const batch = new LineBatch(out, limit, 60_000)
  let asciiLines = 0
  const wrote = batch.wrote.bind(batch)
  batch.wrote = (n) => { asciiLines++; wrote(n) }
  const write = requestLogger(createLogger({ destination: batch, now: clock }))
  let seed = 5
  const pick = <T>(xs: readonly T[]): T => { seed = (seed * 1103515245 + 12345) % 2147483648; return xs[Math.floor(seed / 65536) % xs.length]! }
  const n = 3000
  for (let i = 0; i < n; i++) {
    if (pick([0, 0, 0, 1]) === 1) now += pick([1, 7, 1000, 86_400_000])
    const line: RequestLine = {
      reqId: pick(['a1b2c30000000001', 'a1b2c30000000002', 'a1b2c3000000ffff', 'x"y', 'a1b2c30000000003', 'a1b2c30000000004', 'L'.repeat(9000)]),
      fp: pick([undefined, '0123456789abcdef', 'fedcba9876543210', 'é\n']),
      method: pick(['GET', 'POST', 'M-SEARCH', 'G\tT']),
      route: pick(['/challenge', '/task', 'unmatched']),
      status: pick([200, 404, 429, 503]),
      durationMs: pick([0.42, 12, 1e-7, 3.5, 0.05, 100.1]),
      outcome: pick(['ok', 'AOG_RATE_LIMITED', 'un"known']),
    }
    reference.info({ ...line }, 'request')
    write(line)
  }
  batch.flushSync()
  const ours = out.writes.join('')
  const theirs = pinoLines.join('')
  let bad = 0
  const a = ours.split('\n')
  const b = theirs.split('\n')
  for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) { if (bad++ < 3) t.equal(a[i], b[i], `line ${i}`) }
  t.equal(bad, 0, `${n} lines: same bytes`)
  t.equal(a.length, b.length)
  t.ok(asciiLines > n / 4 && asciiLines < n, `the plain lines (${asciiLines}) took the segment path, the others the whole-line one`)
})
}

t.test('jsonNumber writes what JSON.stringify writes', async (t) => {
  let bad = 0
  for (let c = 0; c < 300_000; c++) if (jsonNumber(c / 100) !== JSON.stringify(c / 100)) bad++
  let seed = 7
  for (let i = 0; i < 100_000; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648
    const x = Math.round((seed / 2147483648) * 10 ** ((i % 14) + 2)) / 100 // rounded durations up to 1e13 ms
    if (jsonNumber(x) !== JSON.stringify(x)) bad++
  }
  t.equal(bad, 0, 'hundredths: same text')
  for (const x of [0, -0, 1e-7, 0.1 + 0.2, 123.456, -1, -0.5, 1e21, 2 ** 53, Number.NaN, Infinity, -Infinity]) {
    t.equal(jsonNumber(x), JSON.stringify(x), `same text for ${x}`)
  }
})

t.test('jsonString writes what JSON.stringify writes', async (t) => {
  const samples = ['', 'a1b2c30000000001', '/challenge', 'AOG_IDENTITY_REQUIRED', 'M-SEARCH', 'x"y', 'a\\b', 'tab\t', 'nl\n', '\u0000', '\u001f', ' ', '~', '\u007f', 'é', '\u2028', '\ud800', '😀', 'a\udc00b']
  for (let c = 0; c < 0x10000; c += 7) samples.push(`k${String.fromCharCode(c)}v`)
  let bad = 0
  for (const x of samples) if (jsonString(x) !== JSON.stringify(x)) bad++
  t.equal(bad, 0, `${samples.length} strings: same text`)
})

/** A LineSink that records what reaches it. */
function sink (): LineSink & { writes: string[], flushes: number, syncFlushes: number } {
  const s = {
    writes: [] as string[],
    flushes: 0,
    syncFlushes: 0,
    write (x: Buffer) { t.ok(Buffer.isBuffer(x), 'bytes reach the sink'); s.writes.push(x.toString('utf8')); return true },
    flush (cb?: (err?: Error) => void) { s.flushes++; cb?.() },
    flushSync () { s.syncFlushes++ },
  }
  return s
}

t.test('LineBatch hands lines on in order, in batches of the limit', async (t) => {
  const out = sink()
  const batch = new LineBatch(out, 30, 60_000)
  batch.write('one 0123456789\n')
  t.same(out.writes, [], 'below the limit: kept')
  batch.write('two 0123456789\n')
  t.same(out.writes, ['one 0123456789\ntwo 0123456789\n'], 'at the limit (30 bytes): one write of both, in order')
  batch.write('three\n')
  await new Promise<void>((resolve) => { batch.flush(() => resolve()) })
  t.same(out.writes.at(-1), 'three\n', 'flush(cb) hands the rest on')
  t.equal(out.flushes, 1, 'and flushes the stream')
  batch.write('four\n')
  batch.flushSync()
  t.same(out.writes.at(-1), 'four\n')
  t.equal(out.syncFlushes, 1)
  batch.flush()
  t.equal(out.writes.length, 3, 'nothing pending: no empty write')
  batch.write('é ✓ 😀\n')
  batch.flush()
  t.equal(out.writes.at(-1), 'é ✓ 😀\n', 'UTF-8 bytes, whatever the characters')
  // Lines up to the worst case of 3 bytes per UTF-16 unit fit; a longer one goes on by itself.
  batch.write('a\n')
  const long = '✓'.repeat(20_000) + '\n'
  batch.write(long)
  t.same(out.writes.slice(-2), ['a\n', long], 'what was gathered first, then the long line whole')
  const many = Array.from({ length: 500 }, (_, i) => `line ${i} ✓ ${'x'.repeat(i % 97)}\n`)
  const before = out.writes.length
  for (const l of many) batch.write(l)
  batch.flushSync()
  t.equal(out.writes.slice(before).join(''), many.join(''), '500 mixed lines arrive whole and in order')
})

t.test('LineBatch hands lines on by itself after flushMs', async (t) => {
  const out = sink()
  const batch = new LineBatch(out, 4096, 20)
  batch.write('late\n')
  await new Promise((resolve) => setTimeout(resolve, 80))
  t.same(out.writes, ['late\n'])
})

t.test('the request line honours the level', async (t) => {
  const c = capture('warn')
  requestLogger(c.logger)({ reqId: 'r', fp: undefined, method: 'GET', route: '/challenge', status: 200, durationMs: 1, outcome: 'ok' })
  t.same(c.lines, [], 'nothing at level warn')
  c.logger.level = 'info'
  requestLogger(c.logger)({ reqId: 'r', fp: undefined, method: 'GET', route: '/challenge', status: 200, durationMs: 1, outcome: 'ok' })
  t.equal(c.lines.length, 1, 'a level raised at run time is followed')
})

t.test('cachedIsoTime rebuilds the fragment only when the clock moves', async (t) => {
  let now = Date.UTC(2026, 10, 27, 5, 0, 0, 1)
  const time = cachedIsoTime(() => now)
  const first = time()
  t.equal(first, ',"time":"2026-11-27T05:00:00.001Z"')
  t.equal(time(), first, 'same millisecond: same string')
  now += 1
  t.equal(time(), ',"time":"2026-11-27T05:00:00.002Z"', 'next millisecond: new string')
  // Whatever the clock does (seconds rolling over, going back, dates before 1970), the fragment is
  // what toISOString gives.
  const check = [0, 1, 999, 1000, 1001, -1, -999, -1000, -1001, Date.UTC(2026, 11, 31, 23, 59, 59, 999), Date.UTC(2027, 0, 1), 8.64e15, -8.64e15]
  let seed = 3
  for (let i = 0; i < 20_000; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648
    check.push(i % 2 === 0 ? Date.UTC(2026, 10, 27) + i * 7 : Math.floor((seed / 2147483648) * 4e12) - 1e12)
  }
  let bad = 0
  for (const x of check) {
    now = x
    if (time() !== `,"time":"${new Date(x).toISOString()}"`) bad++
  }
  t.equal(bad, 0, `${check.length} clock readings: the same text as toISOString`)
})

/**
 * Run a child process that makes the stdout logger with `bufferBytes` and then runs `then` (lines
 * of JS); `onMsg` sees each logged message as the parent reads it. Resolves with every message.
 */
async function loggerChild (bufferBytes: number, then: string[], onMsg: (msg: string, child: ChildProcess) => void = () => {}): Promise<string[]> {
  const script = ["const { createLogger } = await import('./dist/lib/log.js')", `const logger = createLogger({ bufferBytes: ${bufferBytes} })`, ...then].join('\n')
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  const seen: string[] = []
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const msg = (JSON.parse(l) as { msg: string }).msg
    seen.push(msg)
    onMsg(msg, child)
  })
  await new Promise((resolve) => child.on('close', resolve))
  return seen
}

t.test('a buffered stdout logger flushes on its own timer and at exit', async (t) => {
  // The child logs one short line (far below the 4096-byte buffer), waits until the parent has
  // seen it (only the periodic flush can deliver it), then logs another and exits at once (only
  // the flush at exit can deliver that one).
  const seen = await loggerChild(4096, [
    "logger.info('first')",
    "process.stdin.once('data', () => { logger.info('second'); process.exit(0) })",
  ], (msg, child) => { if (msg === 'first') child.stdin!.write('go\n') })
  t.same(seen, ['first', 'second'])
})

t.test('bufferBytes 0 writes each line synchronously', async (t) => {
  // A synchronous destination has written the line before info() returns: killed without any flush.
  t.same(await loggerChild(0, ["logger.info('only')", "process.kill(process.pid, 'SIGKILL')"]), ['only'])
})
