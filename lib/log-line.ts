/**
 * The request log line. For a logger `createLogger` made (its level, time, base and message key
 * are known) it is written in pino's exact bytes from the request's fixed fields, without pino's
 * per-key serializer lookups, its float-to-text of the duration or a regular expression per value,
 * which together cost GET /challenge more than its bench:http target allows (figures:
 * docs/decisions/request-log-line.md). Any other logger gets `logger.info(lineFields(r), 'request')`,
 * so an embedding program's formatters, hooks and redaction shape the line as they shape its own.
 */
import { pino, type Logger } from 'pino'
import type { Identity } from './identity/tls.js'
import { REDACTED_FIELDS, isOwnLogger } from './log.js'
import { wholeText } from './whole-text.js'

/** Log fields: strings, numbers or undefined (left out, as pino leaves them out). */
export type LineFields = Record<string, string | number | undefined>

/** What one request's line says. */
export interface RequestLine {
  reqId: string
  /** The TCP peer's address. */
  addr: string | undefined
  /** Forwarded mode: the agent's address as the proxy saw it. */
  clientAddr: string | undefined
  identity: Identity | undefined
  method: string
  route: string
  /** An unmatched request's path (shortened). */
  path: string | undefined
  status: number
  /** Duration in milliseconds (logged rounded to hundredths). */
  ms: number
  outcome: string
  upstream: { status: number, ms: number } | undefined
}

/**
 * The log fields naming a caller: request id, addresses, identity (a certificate's fingerprint
 * prefix, subject CN and first URI SAN; a Web Bot Auth key's fingerprint prefix, keyid and directory).
 */
export function whoFields (reqId: string, addr: string | undefined, clientAddr: string | undefined, id: Identity | undefined): LineFields {
  const signature = id?.source === 'signature'
  return {
    reqId,
    addr,
    clientAddr,
    fp: id?.fingerprint.slice(0, 16),
    subject: signature ? undefined : nonEmpty(id?.subject),
    uri: signature ? undefined : nonEmpty(id?.uri),
    keyid: signature ? id.subject : undefined,
    directory: signature ? nonEmpty(id.uri) : undefined,
  }
}

/** A request line as log fields, in the order they are written. */
export function lineFields (r: RequestLine): LineFields {
  const line = whoFields(r.reqId, r.addr, r.clientAddr, r.identity)
  line.method = r.method
  line.route = r.route
  line.path = r.path
  line.status = r.status
  line.durationMs = Math.round(r.ms * 100) / 100
  line.outcome = r.outcome
  line.upstreamStatus = r.upstream?.status
  line.upstreamMs = r.upstream?.ms
  return line
}

function nonEmpty (s: string | undefined): string | undefined {
  return s === '' ? undefined : s
}

const INFO = 30
const { chindingsSym, streamSym } = pino.symbols
/** The fields lineFields writes: pino would censor none of them (a test checks REDACTED_FIELDS). */
export const LINE_KEYS = ['reqId', 'addr', 'clientAddr', 'fp', 'subject', 'uri', 'keyid', 'directory', 'method', 'route', 'path', 'status', 'durationMs', 'outcome', 'upstreamStatus', 'upstreamMs'] as const

/** A function that writes one request line (message `request`, level info) to `logger`. */
export function requestLineWriter (logger: Logger): (r: RequestLine) => void {
  if (!isOwnLogger(logger) || LINE_KEYS.some((k) => REDACTED_FIELDS.has(k))) return (r) => { logger.info(lineFields(r), 'request') }
  const internals = logger as unknown as Record<symbol, unknown>
  const stream = internals[streamSym] as { write: (line: string) => void }
  // pino's order: level, time (epoch ms), the bindings, the fields as lineFields gives them, the
  // message. The parts that repeat from line to line are kept until what they hold changes (a
  // fifth of the concatenations; docs/decisions/request-log-line.md): the head (time, bindings),
  // per identity the middle (addresses, identity, method, route, path, status), and the tail.
  let headTime = -1
  let headBindings = ''
  let head = ''
  const middles = new WeakMap<Identity, Middle>()
  const anonymous = emptyMiddle()
  const tails = new Map<string, string>()
  const line = (r: RequestLine): string => {
    const time = Date.now()
    const bindings = internals[chindingsSym] as string
    if (time !== headTime || bindings !== headBindings) head = flat(`{"level":${INFO},"time":${wholeText(headTime = time)}${headBindings = bindings},"reqId":`)
    const id = r.identity
    let m = id === undefined ? anonymous : middles.get(id)
    if (m === undefined) middles.set(id!, m = emptyMiddle())
    if (m.addr !== r.addr || m.clientAddr !== r.clientAddr || m.method !== r.method || m.route !== r.route || m.path !== r.path || m.status !== r.status || m.text === '') {
      m.addr = r.addr
      m.clientAddr = r.clientAddr
      m.method = r.method
      m.route = r.route
      m.path = r.path
      m.status = r.status
      m.text = flat(`${optional('addr', r.addr)}${optional('clientAddr', r.clientAddr)}${id === undefined ? '' : whoText(id)}` +
        `,"method":${jsonText(r.method)},"route":${jsonText(r.route)}${optional('path', r.path)},"status":${numberText(r.status)},"durationMs":`)
    }
    let tail = r.upstream === undefined ? tails.get(r.outcome) : undefined
    if (tail === undefined) {
      tail = flat(`,"outcome":${jsonText(r.outcome)}` +
        `${r.upstream === undefined ? '' : `,"upstreamStatus":${numberText(r.upstream.status)},"upstreamMs":${numberText(r.upstream.ms)}`},"msg":"request"}\n`)
      // Outcomes are the gate's codes: a bounded set.
      if (r.upstream === undefined && tails.size < 256) tails.set(r.outcome, tail)
    }
    return `${head}${jsonText(r.reqId)}${m.text}${hundredths(r.ms)}${tail}`
  }
  return (r) => {
    if (logger.levelVal <= INFO) stream.write(line(r))
  }
}

/** An identity's fields as JSON text, each after a comma. */
function whoText (id: Identity): string {
  const f = whoFields('', undefined, undefined, id) as Record<string, string | undefined>
  return `,"fp":${jsonText(f.fp!)}${optional('subject', f.subject)}${optional('uri', f.uri)}${optional('keyid', f.keyid)}${optional('directory', f.directory)}`
}

function emptyMiddle (): Middle {
  return { addr: undefined, clientAddr: undefined, method: '', route: '', path: undefined, status: -1, text: '' }
}

/** What a line's middle part was made from, and the part. */
interface Middle {
  addr: string | undefined
  clientAddr: string | undefined
  method: string
  route: string
  path: string | undefined
  status: number
  text: string
}

/**
 * `s` flattened: V8 turns a concatenation into one piece of text in place the first time a
 * character of it is read, so a kept part is copied into each line at once, not walked piece by piece.
 */
function flat (s: string): string {
  return s.charCodeAt(0) >= 0 ? s : `${s}`
}

/** `,"key":value` for a string field, nothing for undefined (pino leaves it out). */
function optional (key: string, v: string | undefined): string {
  return v === undefined ? '' : `,"${key}":${jsonText(v)}`
}

/** A string as JSON.stringify writes it: printable ASCII other than `"` and `\` as it is. */
export function jsonText (s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return JSON.stringify(s)
  }
  return `"${s}"`
}

/** A number as pino writes it (non-finite as null). */
function numberText (n: number): string {
  return Number.isFinite(n) ? `${n}` : 'null'
}

/**
 * `Math.round(ms * 100) / 100` as JSON writes it, from the integer number of hundredths (no
 * float-to-text): the exact decimal with at most two fraction digits is the shortest text of that
 * double while one hundredth is more than half its spacing, far beyond any duration (a test compares).
 */
export function hundredths (ms: number): string {
  const h = Math.round(ms * 100)
  if (!(h >= 0 && h < 1e15)) return numberText(h / 100)
  const whole = Math.floor(h / 100)
  const frac = h - whole * 100
  if (frac === 0) return `${whole}`
  return frac % 10 === 0 ? `${whole}.${frac / 10}` : `${whole}.${frac < 10 ? '0' : ''}${frac}`
}
