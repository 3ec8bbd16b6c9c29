/**
 * The pino logger factory. One logger is created in bin/ and passed down; each request gets a
 * child with its request id. Redaction is a safety net: code never logs seeds, secrets,
 * certificates or tokens on purpose, and these paths censor them if an object carrying one
 * reaches a log line anyway.
 */
import { pino, type Logger, type DestinationStream } from 'pino'

export type { Logger }

export const REDACT_PATHS = [
  'seed', '*.seed',
  'secret', '*.secret', 'secrets', '*.secrets',
  'key', '*.key', 'tlsKey', '*.tlsKey',
  'cert', '*.cert', 'raw', '*.raw',
  'token', '*.token', 'attestation', '*.attestation', 'authorization', '*.authorization',
  'password', '*.password', 'redisUrl', '*.redisUrl',
  'req.headers["x-aog-client-cert"]', 'req.headers["x-aog-signature"]', 'req.headers.authorization',
  'headers["x-aog-client-cert"]', 'headers["x-aog-signature"]',
  'body.attestation', 'body.seed',
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
