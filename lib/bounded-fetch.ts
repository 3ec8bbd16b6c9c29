/**
 * A bounded fetch of a small JSON document (an attestation JWKS, a key directory) with undici:
 * status 200 only (a redirect is refused, not followed), the body bounded by its declared length and
 * again while it streams, the whole fetch under a timeout. A refused body is dropped unread. Every
 * failure is a FetchError whose outcome is the callers' metric label.
 */
import { Agent, request, type Dispatcher } from 'undici'

/** Why a fetch failed. */
export type FetchFailure = 'status' | 'redirect' | 'timeout' | 'too_large' | 'invalid' | 'network' | 'closed'

export class FetchError extends Error {
  readonly outcome: FetchFailure
  /** The HTTP status, when one came. */
  readonly status: number | undefined
  constructor (outcome: FetchFailure, message: string, status?: number, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.outcome = outcome
    this.status = status
  }
}

export interface FetchJsonOptions {
  dispatcher: Dispatcher
  /** The whole fetch: headers and body. */
  timeoutMs: number
  /** Largest body accepted. */
  maxBytes: number
  accept: string
  /** A 3xx fails as 'redirect' (else as 'status'). */
  redirectOutcome?: boolean
  /** Aborts the fetch as 'closed', with the abort reason's message. */
  signal?: AbortSignal
}

const UNDICI_TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/** GET `url` and parse its body as JSON; throws a FetchError. */
export async function fetchJson (url: string, o: FetchJsonOptions): Promise<{ status: number, headers: Dispatcher.ResponseData['headers'], doc: unknown }> {
  const { timeoutMs, maxBytes } = o
  const signal = o.signal === undefined ? AbortSignal.timeout(timeoutMs) : AbortSignal.any([AbortSignal.timeout(timeoutMs), o.signal])
  const failure = (err: unknown, late: string, status?: number): FetchError => {
    if (o.signal?.aborted === true) {
      const reason: unknown = o.signal.reason
      return new FetchError('closed', reason instanceof Error ? reason.message : String(reason), status)
    }
    // undici's own timers (connect, headers, body) run out at the same moment as the signal's.
    if (signal.aborted || UNDICI_TIMEOUTS.has((err as { code?: unknown } | undefined)?.code as string)) return new FetchError('timeout', late, status, err)
    return new FetchError('network', (err as Error).message, status, err)
  }
  let res: Dispatcher.ResponseData
  try {
    // undici's request follows no redirect unless a redirect interceptor is composed: a 3xx is
    // answered as it is, and refused below.
    res = await request(url, {
      method: 'GET',
      dispatcher: o.dispatcher,
      headers: { accept: o.accept },
      signal,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    })
  } catch (err) {
    throw failure(err, `no answer within ${timeoutMs} ms`)
  }
  const status = res.statusCode
  const chunks: Buffer[] = []
  try {
    if (o.redirectOutcome === true && status >= 300 && status < 400) throw new FetchError('redirect', `status ${status} (redirects are not followed)`, status)
    if (status !== 200) throw new FetchError('status', `status ${status}`, status)
    const declared = Number(res.headers['content-length'])
    if (declared > maxBytes) throw new FetchError('too_large', `body of ${declared} bytes, over ${maxBytes}`, status)
    let size = 0
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length
      if (size > maxBytes) throw new FetchError('too_large', `body over ${maxBytes} bytes`, status)
      chunks.push(chunk as Buffer)
    }
  } catch (err) {
    // A body destroyed unread emits an error of its own: heard here, not thrown at the process.
    res.body.on('error', () => {})
    res.body.destroy()
    if (err instanceof FetchError) throw err
    throw failure(err, `body not received within ${timeoutMs} ms`, status)
  }
  try {
    return { status, headers: res.headers, doc: JSON.parse(Buffer.concat(chunks).toString('utf8')) }
  } catch {
    // JSON.parse's message quotes the body: not repeated.
    throw new FetchError('invalid', 'the body is not JSON', status)
  }
}

/** The HTTPS client of these fetches: the system CAs, or only `ca` when given. */
export function fetchAgent (ca: string | Buffer | Array<string | Buffer> | undefined, timeoutMs: number): Agent {
  return new Agent({
    connections: 4,
    connectTimeout: timeoutMs,
    connect: { ...(ca === undefined ? {} : { ca }), minVersion: 'TLSv1.2' },
  })
}
