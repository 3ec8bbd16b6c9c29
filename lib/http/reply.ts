/** JSON and problem+json (RFC 9457) writers. Every gate response is `Cache-Control: no-store`. */
import { STATUS_CODES } from 'node:http'
import { randomBytes } from 'node:crypto'
import type { AogError } from '../errors.js'
import type { RateState } from '../stores/store.js'

export const BASE_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }
const BASE_LIST = Object.entries(BASE_HEADERS).flat()

/**
 * The flat header list of a JSON body `text` (writeHead's form), with the name, value pairs of
 * `extra` added; `bytes`: the body's length in bytes when the caller knows it.
 */
export function jsonHeaders (text: string, extra?: readonly string[], bytes: number = Buffer.byteLength(text)): string[] {
  const list = [...BASE_LIST, 'content-type', 'application/json', 'content-length', String(bytes)]
  if (extra !== undefined) for (const x of extra) list.push(x)
  return list
}

/**
 * An AogError's problem+json body (RFC 9457): type, title, status, detail, code (and instance).
 * Never a private cause. `status` other than the code's own is for the answers that HTTP fixes
 * (408, 417) under a code of the table.
 */
export function problemJson (err: AogError, instance?: string, status: number = err.status): string {
  const type = `urn:aog:problem:${err.code.toLowerCase().replace(/_/g, '-')}`
  return JSON.stringify({ type, title: err.title, status, detail: err.detail, code: err.code, ...(instance === undefined ? {} : { instance }) })
}

/** A request id for an answer given outside the request pipeline (16 hex, like the pipeline's). */
export function randomRequestId (): string {
  return randomBytes(8).toString('hex')
}

/**
 * A whole HTTP/1.1 problem response with `Connection: close`, as text, for a socket that has no
 * ServerResponse (the listener's clientError): problemJson's body and problemHeaders' headers, and
 * X-Request-Id.
 */
export function rawProblemResponse (err: AogError, status: number = err.status, requestId: string = randomRequestId()): string {
  const text = problemJson(err, undefined, status)
  const list = problemHeaders(err, text)
  list.push('x-request-id', requestId)
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n`
  for (let i = 0; i < list.length; i += 2) head += `${list[i]!}: ${list[i + 1]!}\r\n`
  return `${head}connection: close\r\n\r\n${text}`
}

/**
 * The flat header list of `err`'s problem body `text` (problemJson's): BASE_HEADERS, the error's
 * own headers (which must not repeat them), Retry-After, the media type and the length. Refusals
 * are as frequent as the requests that earn them: a flood of 429s must cost no more than the answers.
 */
export function problemHeaders (err: AogError, text: string): string[] {
  const list = [...BASE_LIST]
  const extra = err.headers
  for (const k in extra) list.push(k, extra[k]!)
  if (err.retryAfter !== undefined) list.push('retry-after', String(Math.max(1, Math.ceil(err.retryAfter))))
  list.push('content-type', 'application/problem+json', 'content-length', String(Buffer.byteLength(text)))
  return list
}

/**
 * RateLimit headers, draft-ietf-httpapi-ratelimit-headers (structured fields): the policy
 * (`q` tokens, refilled over `w` seconds) and the current state (`r` remaining, `t` seconds
 * until the bucket is full).
 */
export function rateHeaders (rate: RateState, perSecond: number): Record<string, string> {
  return { 'ratelimit-policy': policyText(rate.limit, perSecond), ratelimit: rateText(rate) }
}

/** rateHeaders as a flat list of names and values (writeHead's form). */
export function rateHeaderList (rate: RateState, perSecond: number): string[] {
  return ['ratelimit-policy', policyText(rate.limit, perSecond), 'ratelimit', rateText(rate)]
}

function policyText (limit: number, perSecond: number): string {
  return `"identity";q=${limit};w=${Math.max(1, Math.ceil(limit / perSecond))}`
}

function rateText (rate: RateState): string {
  return `"identity";r=${rate.remaining};t=${Math.ceil(rate.resetMs / 1000)}`
}
