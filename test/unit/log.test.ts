import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { Writable } from 'node:stream'
import { createInterface } from 'node:readline'
import { createLogger } from '../../lib/log.js'

function capture (level = 'info'): { logger: ReturnType<typeof createLogger>, lines: string[] } {
  const lines: string[] = []
  const destination = new Writable({ write (chunk, _enc, cb) { lines.push(String(chunk)); cb() } })
  return { logger: createLogger({ level, destination }), lines }
}

t.test('the logger writes JSON lines with pino\'s epoch-milliseconds time, the service, and secrets redacted', async (t) => {
  const c = capture()
  c.logger.info({ seed: 'ab'.repeat(32), body: { attestation: 'x.y.z' }, reqId: 'r1' }, 'request')
  const line = JSON.parse(c.lines[0]!)
  t.match(line, { level: 30, service: 'aog', reqId: 'r1', msg: 'request', seed: '[redacted]', body: { attestation: '[redacted]' } })
  t.ok(Number.isInteger(line.time) && Math.abs(line.time - Date.now()) < 60_000, 'time: Unix epoch milliseconds')
  const quiet = capture('warn')
  quiet.logger.info('nothing')
  t.same(quiet.lines, [], 'below the level: nothing written')
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

t.test('a full batch is written without waiting for the timer; only the last, partial one waits', async (t) => {
  // 100 lines of about 150 bytes into a 1,024-byte batch, then killed 50 ms later (before the
  // 200 ms timer): the full batches have been written, the partial last one is lost with the process.
  const seen = await loggerChild(1024, [
    "for (let i = 0; i < 100; i++) logger.info({ i, pad: 'x'.repeat(60) }, 'line ' + i)",
    "setTimeout(() => process.kill(process.pid, 'SIGKILL'), 50)",
  ])
  t.ok(seen.length >= 85 && seen.length < 100, `${seen.length} of 100 lines written before the kill`)
  t.same(seen, seen.map((_, i) => `line ${i}`), 'in order, none twice')
})

t.test('bufferBytes 0 writes each line synchronously', async (t) => {
  // A synchronous destination has written the line before info() returns: killed without any flush.
  t.same(await loggerChild(0, ["logger.info('only')", "process.kill(process.pid, 'SIGKILL')"]), ['only'])
})
