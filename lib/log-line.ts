/**
 * The request log line, written in pino's exact bytes for a logger `createLogger` made (its level,
 * time, base and message key are known), without pino's per-key serializer lookups, which cost
 * GET /challenge more than its bench:http target allows (figures: docs/decisions/request-log-line.md).
 * Any other logger gets `logger.info`, so an embedding program's formatters, hooks and redaction
 * shape the line as they shape its own.
 */
import { pino, type Logger } from 'pino'
import { REDACTED_FIELDS, isOwnLogger } from './log.js'

/** The fields of one request line: strings, numbers or undefined (left out, as pino leaves it out). */
export type LineFields = Record<string, string | number | undefined>

const INFO = 30
/** Text JSON writes as it is: printable ASCII other than the quote and the backslash. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/
const { chindingsSym, streamSym } = pino.symbols

/** A function that writes one request line (message `request`, level info) to `logger`. */
export function requestLineWriter (logger: Logger): (fields: LineFields) => void {
  if (!isOwnLogger(logger)) return (fields) => { logger.info(fields, 'request') }
  const internals = logger as unknown as Record<symbol, unknown>
  const stream = internals[streamSym] as { write: (line: string) => void }
  return (fields) => {
    if (logger.levelVal > INFO) return
    // pino's order: level, time (epoch ms), the bindings, the fields as given, the message.
    let line = `{"level":${INFO},"time":${Date.now()}${internals[chindingsSym] as string}`
    for (const key in fields) {
      const v = fields[key]
      if (v === undefined) continue
      // A field pino would censor, or a value that is not text or a number: pino writes the line.
      if (REDACTED_FIELDS.has(key) || (typeof v !== 'string' && typeof v !== 'number')) { logger.info(fields, 'request'); return }
      // Keys are the gate's own identifiers (nothing to escape); strings as JSON.stringify writes
      // them (printable ASCII without " or \\ as is), numbers as pino does (non-finite as null).
      line += `,"${key}":${typeof v === 'string' ? (PLAIN.test(v) ? `"${v}"` : JSON.stringify(v)) : Number.isFinite(v) ? v : 'null'}`
    }
    stream.write(`${line},"msg":"request"}\n`)
  }
}
