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
 * most lines share their millisecond, so the fragment is rebuilt only when the clock moves.
 */
export function cachedIsoTime (now: () => number = Date.now): () => string {
  let last = -1
  let fragment = ''
  return () => {
    const t = now()
    if (t !== last) {
      last = t
      fragment = `,"time":"${new Date(t).toISOString()}"`
    }
    return fragment
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
  // pino.destination registers a flush at exit for asynchronous destinations.
  const destination = buffer > 0
    ? pino.destination({ dest: 1, sync: false, minLength: buffer, periodicFlush: LOG_FLUSH_MS })
    : pino.destination({ dest: 1, sync: true })
  return pino(options, destination)
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
 * A writer for the per-request line, the one log call on every request's path. It produces the
 * same bytes as `logger.info(fields, 'request')` (a test compares the two) through the logger's
 * own stream, timestamp and bindings (pino.symbols), without pino's generic per-key serialisation
 * and redaction walk: these fields are ids, codes and numbers, never secrets.
 */
export function requestLogger (logger: Logger): (line: RequestLine) => void {
  const l = logger as unknown as Record<symbol, unknown>
  const stream = l[pino.symbols.streamSym] as { write: (s: string) => void }
  const time = l[pino.symbols.timeSym] as () => string
  const bindings = l[pino.symbols.chindingsSym] as string
  const level = pino.levels.values.info!
  return (f) => {
    if (!logger.isLevelEnabled('info')) return
    stream.write(`{"level":${level}${time()}${bindings},"reqId":${str(f.reqId)}${f.fp === undefined ? '' : `,"fp":${str(f.fp)}`},"method":${str(f.method)},"route":${str(f.route)},"status":${f.status},"durationMs":${Number.isFinite(f.durationMs) ? f.durationMs : null},"outcome":${str(f.outcome)},"msg":"request"}\n`)
  }
}
