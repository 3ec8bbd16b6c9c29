/**
 * The pino logger factory. One logger is created in bin/ and passed down; each request gets a
 * child with its request id. Redaction is a safety net: code never logs seeds, secrets,
 * certificates or tokens on purpose, and these paths censor them if an object carrying one
 * reaches a log line anyway.
 */
import { pino, type Logger, type DestinationStream } from 'pino'

export type { Logger }

// Paths without leading wildcards where possible: redaction runs on every log call, and each
// wildcard path walks the whole object (it cost 8% of a GET /challenge in `npm run profile`).
export const REDACT_PATHS = [
  'seed', 'secret', 'secrets', 'key', 'tlsKey', 'cert', 'raw', 'token', 'attestation', 'authorization',
  'password', 'redisUrl',
  'body.seed', 'body.attestation', 'config.redisUrl', 'config.tlsKey',
  'req.headers["x-aog-client-cert"]', 'req.headers["x-aog-signature"]', 'req.headers.authorization',
  'headers["x-aog-client-cert"]', 'headers["x-aog-signature"]',
]

/** How often a buffered destination is flushed even when its buffer is not full (ms). */
export const LOG_FLUSH_MS = 200

export interface LogOptions {
  level?: string
  /** A stream of our own (tests). Default: stdout (fd 1), buffered as `bufferBytes` says. */
  destination?: DestinationStream
  /**
   * Buffer stdout lines up to this many bytes (flushed every LOG_FLUSH_MS and at exit, pino's
   * asynchronous mode); 0 writes each line synchronously. One write(2) per request line was
   * the largest logging cost of a GET /challenge in `npm run profile`.
   */
  bufferBytes?: number
  /** Clock for the timestamps (tests pin it). */
  now?: () => number
}

/**
 * pino's isoTime builds a Date and an ISO string per line; at thousands of lines per second
 * most lines share their millisecond, so the fragment is rebuilt only when the clock moves, and
 * the date part (Date#toISOString, ~7,000 instructions) only when it enters a new second.
 */
export function cachedIsoTime (now: () => number = Date.now): (() => string) & { ascii: true } {
  let last = Number.NaN
  let fragment = ''
  let second = Number.NaN
  let prefix = '' // ',"time":"YYYY-MM-DDTHH:MM:SS.'
  return Object.assign(() => {
    const t = now()
    if (t !== last) {
      last = t
      const ms = ((t % 1000) + 1000) % 1000
      if (t - ms !== second) {
        second = t - ms
        prefix = `,"time":"${new Date(second).toISOString().slice(0, -4)}`
      }
      fragment = `${prefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`
    }
    return fragment
  }, { ascii: true as const }) // its text is always ASCII (requestLogger relies on it)
}

/** Where LineBatch sends its batches: SonicBoom in buffer mode (bytes, not strings). */
export interface LineSink {
  write: (chunk: Buffer) => boolean
  flush: (cb?: (err?: Error) => void) => void
  flushSync: () => void
}

/**
 * Whole lines encoded into one buffer as they come and handed to SonicBoom as bytes (its buffer
 * mode), which writes them to the fd. SonicBoom's string mode takes the UTF-8 byte length of its
 * whole pending buffer on every write, and again of each chunk it writes (a 4 KiB string
 * flattened and counted per line: the largest single cost of a GET /challenge in callgrind); here
 * a line costs one UTF-8 encoding into place. Lines keep their order: every line of the logger
 * goes through here. A batch is handed on when `limit` bytes are gathered, every `flushMs`, on
 * flush()/flushSync(), and at exit (before SonicBoom's own flush at exit, which pino.destination
 * registers). A line too long for the buffer goes on by itself, after what was gathered.
 */
export class LineBatch implements DestinationStream {
  readonly #buf: Buffer
  #used = 0
  readonly #out: LineSink
  readonly #limit: number
  readonly #timer: NodeJS.Timeout

  constructor (out: LineSink, limit: number, flushMs = LOG_FLUSH_MS) {
    this.#out = out
    this.#limit = limit
    this.#buf = Buffer.allocUnsafeSlow(limit + 8192)
    this.#timer = setInterval(() => { this.#move() }, flushMs)
    this.#timer.unref()
    process.prependListener('exit', () => { this.#move() })
  }

  /**
   * For a writer that puts a line's bytes into the buffer itself (the request line): the buffer,
   * with room for `n` more bytes from `at` (a full batch is handed on first), or undefined when
   * no batch can hold `n` bytes. The writer then calls wrote(n).
   */
  room (n: number): Buffer | undefined {
    if (n > this.#buf.length - this.#used) {
      this.#move()
      if (n > this.#buf.length) return undefined
    }
    return this.#buf
  }

  /** Where room()'s bytes go. */
  get at (): number { return this.#used }

  /** `n` bytes were written at `at`: they are part of the batch now. */
  wrote (n: number): void {
    this.#used += n
    if (this.#used >= this.#limit) this.#move()
  }

  write (line: string): boolean {
    // A UTF-16 code unit takes at most 3 bytes of UTF-8.
    if (line.length * 3 > this.#buf.length - this.#used) {
      this.#move()
      if (line.length * 3 > this.#buf.length) {
        this.#out.write(Buffer.from(line, 'utf8'))
        return true
      }
    }
    this.#used += this.#buf.write(line, this.#used, 'utf8')
    if (this.#used >= this.#limit) this.#move()
    return true
  }

  /** Hand the gathered lines to SonicBoom, then let it write them out (cb when written). */
  flush (cb?: (err?: Error) => void): void {
    this.#move()
    this.#out.flush(cb)
  }

  flushSync (): void {
    this.#move()
    this.#out.flushSync()
  }

  #move (): void {
    if (this.#used === 0) return
    // A copy: SonicBoom keeps the chunk until its write completes, and the buffer is reused.
    const chunk = Buffer.allocUnsafe(this.#used)
    this.#buf.copy(chunk, 0, 0, this.#used)
    this.#used = 0
    this.#out.write(chunk)
  }
}

/** Create the process logger (JSON lines on stdout by default). */
export function createLogger (opts: LogOptions = {}): Logger {
  const options = {
    level: opts.level ?? 'info',
    base: { service: 'aog' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: cachedIsoTime(opts.now),
  }
  if (opts.destination !== undefined) return pino(options, opts.destination)
  const buffer = opts.bufferBytes ?? 0
  if (buffer === 0) return pino(options, pino.destination({ dest: 1, sync: true }))
  // SonicBoom writes whenever it has something and is not already writing (minLength 0), in
  // buffer mode (it takes LineBatch's bytes as they are); the batching is LineBatch's.
  // pino.destination registers SonicBoom's flush at exit.
  const sonic = pino.destination({ dest: 1, sync: false, minLength: 0, contentMode: 'buffer' }) as unknown as LineSink
  return pino(options, new LineBatch(sonic, buffer))
}

/** The fields of the one line the gate logs per request. */
export interface RequestLine {
  reqId: string
  fp: string | undefined
  method: string
  route: string
  status: number
  durationMs: number
  outcome: string
}

const str = JSON.stringify

/**
 * A JSON number as JSON.stringify writes it. Request durations arrive rounded to hundredths
 * (Math.round(ms * 100) / 100); those are written from the integer, without the shortest-double
 * conversion (FastDtoa, the costliest part of the line in callgrind). "i.ff" with trailing zeros
 * dropped is what JSON.stringify gives for c / 100: it parses back to that double, and below
 * 1e15 no shorter decimal does.
 */
export function jsonNumber (x: number): string {
  if (!Number.isFinite(x)) return 'null'
  const c = Math.round(x * 100)
  if (c / 100 !== x || c < 0 || c >= 1e15) return String(x)
  const frac = c % 100
  const int = (c - frac) / 100
  return frac === 0 ? `${int}` : frac % 10 === 0 ? `${int}.${frac / 10}` : `${int}.${frac < 10 ? '0' : ''}${frac}`
}

/** Printable ASCII without quotes or backslashes: JSON writes such a string as it is. */
function plain (s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false
  }
  return true
}

/**
 * A JSON string as JSON.stringify writes it. Ids, fingerprints, methods, routes and codes are
 * plain (printable ASCII without quotes or backslashes), which JSON writes as they are; anything
 * else goes to JSON.stringify. (Two JSON.stringify calls per request line cost 2,700 instructions.)
 */
export function jsonString (s: string): string {
  return plain(s) ? `"${s}"` : str(s)
}

/**
 * A writer for the per-request line, the one log call on every request's path. It produces the
 * same bytes as `logger.info(fields, 'request')` (a test compares the two) through the logger's
 * own stream, timestamp and bindings (pino.symbols), without pino's generic per-key serialisation
 * and redaction walk: these fields are ids, codes and numbers, never secrets.
 *
 * A line is mostly the same as the one before: the same millisecond, identity, route, status and
 * outcome. When the stream is a LineBatch and every part of the line is plain ASCII, the line is
 * written into the batch's buffer in five pieces: three kept segments as bytes (each encoded again
 * only when what it holds changes) copied with Uint8Array#set, and the request id and the duration
 * character by character. No string of the whole line is built: concatenating it, then flattening
 * and copying it into the buffer was most of the line's cost (`perf`, session 7). Any other line
 * is built in one piece with jsonString's escaping and written as a string.
 */
export function requestLogger (logger: Logger): (line: RequestLine) => void {
  const l = logger as unknown as Record<symbol, unknown>
  const stream = l[pino.symbols.streamSym] as { write: (s: string) => void }
  const time = l[pino.symbols.timeSym] as () => string
  const bindings = l[pino.symbols.chindingsSym] as string
  const level = pino.levels.values.info!
  // Segments need ASCII bindings, an ASCII clock (cachedIsoTime's, marked as such) and a LineBatch.
  const batch = /^[\x20-\x7e]*$/.test(bindings) && (time as { ascii?: boolean }).ascii === true && stream instanceof LineBatch ? stream : undefined
  // '{"level":30,"time":"…",<bindings>,"reqId":"' for the last time fragment.
  let stamp: string | undefined
  let head = EMPTY
  // The middle segment: '","fp":"…"' (or '"' without one) for the last fingerprint, then
  // ',"method":"…","route":"…","status":…,"durationMs":' for the last method, route and status.
  let fp: string | undefined | null = null
  let method = ''
  let route = ''
  let status = Number.NaN
  let middle: Buffer | undefined
  // ',"outcome":"…","msg":"request"}\n' for the last outcome.
  let outcome: string | undefined
  let tail: Buffer | undefined
  const whole = (f: RequestLine, t: string): string =>
    `{"level":${level}${t}${bindings},"reqId":${jsonString(f.reqId)}${f.fp === undefined ? '' : `,"fp":${jsonString(f.fp)}`},"method":${jsonString(f.method)},"route":${jsonString(f.route)},"status":${f.status},"durationMs":${jsonNumber(f.durationMs)},"outcome":${jsonString(f.outcome)},"msg":"request"}\n`
  return (f) => {
    if (logger.levelVal > level) return // pino's default order: enabled from its level up
    const t = time()
    const id = f.reqId
    if (batch === undefined || !plain(id)) { stream.write(whole(f, t)); return }
    if (t !== stamp) {
      stamp = t
      head = Buffer.from(`{"level":${level}${t}${bindings},"reqId":"`, 'latin1')
    }
    if (f.fp !== fp || f.method !== method || f.route !== route || f.status !== status || middle === undefined) {
      fp = f.fp
      method = f.method
      route = f.route
      status = f.status
      middle = (fp === undefined || plain(fp)) && plain(method) && plain(route)
        ? Buffer.from(`${fp === undefined ? '"' : `","fp":"${fp}"`},"method":"${method}","route":"${route}","status":${status},"durationMs":`, 'latin1')
        : undefined
    }
    if (f.outcome !== outcome) {
      outcome = f.outcome
      tail = plain(outcome) ? Buffer.from(`,"outcome":"${outcome}","msg":"request"}\n`, 'latin1') : undefined
    }
    if (middle === undefined || tail === undefined) { stream.write(whole(f, t)); return }
    const d = jsonNumber(f.durationMs)
    const n = head.length + id.length + middle.length + d.length + tail.length
    const buf = batch.room(n)
    if (buf === undefined) { stream.write(whole(f, t)); return }
    let p = batch.at
    buf.set(head, p)
    p += head.length
    for (let i = 0; i < id.length; i++) buf[p + i] = id.charCodeAt(i)
    p += id.length
    buf.set(middle, p)
    p += middle.length
    for (let i = 0; i < d.length; i++) buf[p + i] = d.charCodeAt(i)
    buf.set(tail, p + d.length)
    batch.wrote(n)
  }
}

const EMPTY = Buffer.alloc(0)
