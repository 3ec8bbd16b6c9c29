/**
 * Bounded JSON body reader: media type (415), size (413, from Content-Length before reading and
 * while streaming), a prototype-safe parse (`__proto__` and `constructor.prototype` are refused,
 * 400) and a JSON object at the top (400).
 */
import type { IncomingMessage } from 'node:http'
import sjson from 'secure-json-parse'
import { AogError } from '../errors.js'

/** True for `application/json`, optionally with `charset=utf-8`. */
export function isJsonMediaType (header: string | undefined): boolean {
  if (header === undefined) return false
  const [type, ...params] = header.split(';').map((p) => p.trim().toLowerCase())
  if (type !== 'application/json') return false
  return params.every((p) => p === '' || p === 'charset=utf-8' || p === 'charset="utf-8"')
}

/**
 * Read and parse the request body. Throws AogError AOG_UNSUPPORTED_MEDIA_TYPE, AOG_BODY_TOO_LARGE
 * or AOG_BAD_REQUEST. On 413 the rest of the body is not read: the caller closes the connection.
 */
export async function readJsonBody (req: IncomingMessage, maxBytes: number): Promise<Record<string, unknown>> {
  if (!isJsonMediaType(req.headers['content-type'])) {
    throw new AogError('AOG_UNSUPPORTED_MEDIA_TYPE', 'Content-Type must be application/json')
  }
  const declared = req.headers['content-length']
  if (declared !== undefined && Number(declared) > maxBytes) {
    throw new AogError('AOG_BODY_TOO_LARGE', `body exceeds ${maxBytes} bytes`)
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > maxBytes) throw new AogError('AOG_BODY_TOO_LARGE', `body exceeds ${maxBytes} bytes`)
    chunks.push(chunk as Buffer)
  }
  const text = Buffer.concat(chunks, size).toString('utf8')
  let value: unknown
  try {
    value = sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    const proto = err instanceof SyntaxError && /prototype/i.test(err.message)
    throw new AogError('AOG_BAD_REQUEST', proto ? 'body contains a forbidden prototype property' : 'body is not valid JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AogError('AOG_BAD_REQUEST', 'body must be a JSON object')
  }
  return value as Record<string, unknown>
}
