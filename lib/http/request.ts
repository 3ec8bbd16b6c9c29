/**
 * Checks of a request's framing and target that hold for every route, made before routing and the
 * identity step (docs/protocol.md section 7.3): RFC 9112 leaves the server to answer 400 for them,
 * and node's parser lets them through.
 */
import type { IncomingMessage } from 'node:http'
import { AogError } from '../errors.js'

/**
 * A dot-segment of a path: `.` or `..` (either dot as `%2e`, any case) between slashes. A
 * backslash, `%2f` and `%5c` also count as slashes, and `;` ends a segment (`..;` is `..` to Tomcat).
 */
export const DOT_SEGMENT = /(?:[/\\]|%2f|%5c)(?:\.|%2e){1,2}(?:$|[/\\;]|%2f|%5c)/i

/** How much of a refused Transfer-Encoding the refusal's detail repeats. */
const CODING_CHARS = 64

/**
 * The 400 AOG_BAD_REQUEST of a request no route may serve, or undefined:
 * - a request target with `#`: origin-form has no fragment (RFC 9112 3.2.1), and an upstream or
 *   a router that reads one would see another path than the gate checked (`/..#x`);
 * - an HTTP/1.1 request without Host, or any request with more than one (RFC 9112 3.2);
 * - a Transfer-Encoding other than `chunked` alone (RFC 9112 6.1 lets a server refuse a coding
 *   it does not decode; relaying the body decoded under another coding would change it).
 *
 * Every request goes through this: one scan of the target, one of the header names comparing only
 * those of length 4, and nothing allocated for a request that passes.
 */
export function malformed (req: IncomingMessage): AogError | undefined {
  if ((req.url ?? '').includes('#')) return new AogError('AOG_BAD_REQUEST', 'the request target must not contain "#" (a fragment is not sent)')
  const raw = req.rawHeaders
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    // `host` in any case, without lowercasing the name: bit 0x20 folds ASCII letters to lowercase.
    if (name.length === 4 && (name.charCodeAt(0) | 0x20) === 0x68 && (name.charCodeAt(1) | 0x20) === 0x6f &&
      (name.charCodeAt(2) | 0x20) === 0x73 && (name.charCodeAt(3) | 0x20) === 0x74) hosts++
  }
  if (hosts > 1) return new AogError('AOG_BAD_REQUEST', 'the request has more than one Host header')
  if (hosts === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) return new AogError('AOG_BAD_REQUEST', 'an HTTP/1.1 request must have a Host header')
  const te = req.headers['transfer-encoding']
  if (te !== undefined && !(te.length === 7 && te.toLowerCase() === 'chunked')) {
    const coding = te.length > CODING_CHARS ? `${te.slice(0, CODING_CHARS)}…` : te
    return new AogError('AOG_BAD_REQUEST', `Transfer-Encoding "${coding}" is not supported: only "chunked"`)
  }
  return undefined
}
