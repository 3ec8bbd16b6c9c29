/**
 * The one table of public errors (docs/protocol.md section 5). Code and tests match on `code`, never on
 * message text. The public body carries the code, the title and a safe detail; a private cause, if
 * any, goes to the log only.
 */
export const ERRORS = {
  AOG_BAD_REQUEST: { status: 400, title: 'Bad request' },
  AOG_IDENTITY_REQUIRED: { status: 401, title: 'Client identity required' },
  AOG_GRANT_REQUIRED: { status: 401, title: 'Grant required' },
  AOG_SIGNATURE_INVALID: { status: 401, title: 'Request signature invalid' },
  AOG_FINGERPRINT_MISMATCH: { status: 403, title: 'Fingerprint does not match the client certificate' },
  AOG_ATTESTATION_INVALID: { status: 403, title: 'Attestation invalid' },
  AOG_NOT_AUTHORIZED: { status: 403, title: 'Not authorized' },
  AOG_UNKNOWN_NONCE: { status: 404, title: 'Unknown nonce' },
  AOG_NOT_FOUND: { status: 404, title: 'Not found' },
  AOG_METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  AOG_NONCE_CONSUMED: { status: 409, title: 'Nonce already consumed' },
  AOG_DEADLINE_PASSED: { status: 410, title: 'Challenge deadline passed' },
  AOG_BODY_TOO_LARGE: { status: 413, title: 'Request body too large' },
  AOG_UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported media type' },
  AOG_WRONG_RESULT: { status: 422, title: 'Wrong result' },
  AOG_TRACE_MISMATCH: { status: 422, title: 'Trace mismatch' },
  AOG_RUNTIME_IMPLAUSIBLE: { status: 422, title: 'Runtime implausible' },
  AOG_RATE_LIMITED: { status: 429, title: 'Rate limited' },
  AOG_UPSTREAM_UNAVAILABLE: { status: 502, title: 'Upstream unavailable' },
  AOG_UNAVAILABLE: { status: 503, title: 'Service unavailable' },
  AOG_OVERLOADED: { status: 503, title: 'Overloaded' },
  AOG_VERIFICATION_ABORTED: { status: 503, title: 'Verification did not complete' },
  AOG_UPSTREAM_TIMEOUT: { status: 504, title: 'Upstream timeout' },
} as const satisfies Record<string, { status: number, title: string }>

export type ErrorCode = keyof typeof ERRORS

export interface AogErrorOptions {
  /** Seconds for the Retry-After header (429 and 503). */
  retryAfter?: number
  /** Extra response headers (e.g. RateLimit, Allow). */
  headers?: Record<string, string>
  /** Private cause: logged, never sent. */
  cause?: unknown
  /** Which of several checks behind one code refused, for the log's outcome and metrics; never sent. */
  reason?: string
}

/**
 * An error with a stable public code. `detail` must be safe to show to the client.
 *
 * It carries no stack trace: it is the gate's answer to a request (429 to a flooding identity,
 * 404 to a guessed nonce), made as often as the requests that earn it, and V8's capture of the
 * call stack cost ~8 us per refused request (`npm run profile` on the 429 path), where a whole
 * answered GET /challenge costs ~35 us. Its `stack` is its first line, "AogError: <detail>"; a
 * private cause keeps its own stack.
 */
export class AogError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly title: string
  readonly detail: string
  readonly retryAfter: number | undefined
  readonly headers: Record<string, string>
  readonly reason: string | undefined

  constructor (code: ErrorCode, detail?: string, opts: AogErrorOptions = {}) {
    const def = ERRORS[code]
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(detail ?? def.title, opts.cause === undefined ? undefined : { cause: opts.cause })
    Error.stackTraceLimit = limit
    this.name = 'AogError'
    this.code = code
    this.status = def.status
    this.title = def.title
    this.detail = detail ?? def.title
    this.retryAfter = opts.retryAfter
    this.headers = opts.headers ?? {}
    this.reason = opts.reason
  }
}

/** Raised by a store that cannot be reached; the gate answers 503 AOG_UNAVAILABLE (fail closed). */
export class StoreUnavailableError extends Error {
  readonly code = 'AOG_STORE_UNAVAILABLE'
  constructor (message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'StoreUnavailableError'
  }
}

/** Raised by the verification pool when its queue is full or a task timed out. */
export class PoolBusyError extends Error {
  readonly code = 'AOG_POOL_BUSY'
  readonly reason: 'queue-full' | 'timeout' | 'closed' | 'worker-error'
  constructor (reason: PoolBusyError['reason'], message: string) {
    super(message)
    this.name = 'PoolBusyError'
    this.reason = reason
  }
}
