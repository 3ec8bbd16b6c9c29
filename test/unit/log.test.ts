import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { Writable } from 'node:stream'
import { createInterface } from 'node:readline'
import { cachedIsoTime, createLogger, requestLogger, type RequestLine } from '../../lib/log.js'

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
