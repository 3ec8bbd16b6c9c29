/**
 * The pino logger factory. One logger is created in bin/ and passed down; each request's line goes
 * through it (`logger.info({...}, 'request')`), so a host application's own pino logger shapes,
 * redacts and routes the gate's lines like its own. Redaction is a safety net: code never logs
 * seeds, secrets, certificates or tokens on purpose, and these paths censor them if an object
 * carrying one reaches a log line anyway.
 */
import { pino, type Logger, type DestinationStream } from 'pino'
import { LineBatch } from './log-batch.js'

export type { Logger }

// Paths without leading wildcards: redaction runs on every log call, and each wildcard path walks
// the whole object.
export const REDACT_PATHS = [
  'seed', 'secret', 'secrets', 'key', 'tlsKey', 'cert', 'raw', 'token', 'attestation', 'authorization',
  'password', 'redisUrl',
  'body.seed', 'body.attestation', 'config.redisUrl', 'config.tlsKey',
  'req.headers["x-aog-client-cert"]', 'req.headers["x-aog-signature"]', 'req.headers.authorization',
  'headers["x-aog-client-cert"]', 'headers["x-aog-signature"]',
]

/** The top-level names among REDACT_PATHS: a field of that name is censored wherever it is logged. */
export const REDACTED_FIELDS: ReadonlySet<string> = new Set(REDACT_PATHS.filter((p) => !/[.[]/.test(p)))

/** How often a buffered stdout is flushed even when its buffer is not full (ms). */
export const LOG_FLUSH_MS = 200

export interface LogOptions {
  level?: string
  /** A stream of our own (tests). Default: stdout (fd 1), buffered as `bufferBytes` says. */
  destination?: DestinationStream
  /** Where the default destination writes: a file descriptor or path (default 1, stdout; benches: /dev/null). */
  dest?: number | string
  /**
   * Buffer stdout up to this many bytes (pino.destination's minLength, flushed every LOG_FLUSH_MS
   * and at exit); 0 writes each line synchronously.
   */
  bufferBytes?: number
}

/** Create the process logger (JSON lines on stdout by default). */
export function createLogger (opts: LogOptions = {}): Logger {
  const options = {
    level: opts.level ?? 'info',
    base: { service: 'aog' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  }
  const logger = pino(options, opts.destination ?? destination(opts))
  OWN.add(logger)
  return logger
}

function destination (opts: LogOptions): DestinationStream {
  const buffer = opts.bufferBytes ?? 0
  if (buffer === 0) return pino.destination({ dest: opts.dest ?? 1, sync: true })
  // pino.destination flushes what is buffered at exit; periodicFlush bounds how long a line waits.
  // SonicBoom requires minLength below maxWrite (16 KiB by default).
  const sonic = pino.destination({ dest: opts.dest ?? 1, sync: false, minLength: buffer, maxWrite: Math.max(16384, 2 * buffer), periodicFlush: LOG_FLUSH_MS, contentMode: 'buffer' })
  return new LineBatch(sonic, buffer)
}

/** The loggers createLogger made: their options are the ones above (log-line.ts writes their format). */
const OWN = new WeakSet<Logger>()

export function isOwnLogger (logger: Logger): boolean {
  return OWN.has(logger)
}
