/** Messages between the verification pool and its workers (structured-cloned). */

/** Recompute `n` links keyed by `key` from `start` and compare with `expected` (32 bytes each). */
export interface Segment {
  start: Uint8Array
  key: Uint8Array
  n: number
  expected: Uint8Array
}

export interface VerifyRequest {
  id: number
  segments: Segment[]
}

export interface VerifyReply {
  id: number
  /** True when every segment matched. */
  ok: boolean
  /** Index of the first segment that did not match, -1 when ok. */
  failed: number
}

export interface WorkerInit {
  /** Chain implementation the worker must use ('typescript' or 'native'). */
  implementation: string
}

export interface WorkerReady {
  ready: true
  implementation: string
}
