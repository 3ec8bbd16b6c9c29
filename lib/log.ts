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

export interface LogOptions {
  level?: string
  destination?: DestinationStream
}

/** Create the process logger (JSON lines on stdout by default). */
export function createLogger (opts: LogOptions = {}): Logger {
  const options = {
    level: opts.level ?? 'info',
    base: { service: 'aog' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  return opts.destination === undefined ? pino(options) : pino(options, opts.destination)
}
