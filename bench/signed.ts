/**
 * Signed GET /challenge requests for autocannon (Web Bot Auth, docs/protocol.md section 8): a pool
 * of fresh signatures made before the load, each sent once, so that the load generator does not
 * sign while the gate is measured (docs/decisions/signature-cost.md). A request beyond the pool is
 * signed as it is sent, and counted.
 */
import type autocannon from 'autocannon'
import { createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { signRequest, type SignatureHeaders } from '../lib/webbotauth/sign.js'
import { DEV } from './servers.js'

/** The dev signing key (certs/gen.sh) and the directory the dev gate allows for it. */
export const SIGNING_KEY = createPrivateKey(readFileSync(join(DEV, 'signing-key.pem')))
export const DIRECTORY = 'https://agent.aog.dev'

/** A fresh signature of GET /challenge for `authority`, valid for five minutes. */
export function signChallenge (authority: string): SignatureHeaders {
  return signRequest({ method: 'GET', authority, target: '/challenge' }, { key: SIGNING_KEY, directoryUrl: DIRECTORY, validitySeconds: 300 })
}

/**
 * A signature base the size of the gate's for a signed GET /challenge (the same components and
 * parameters), for the bare verifications the target is measured against.
 */
export function challengeBase (): Buffer {
  const headers = signChallenge('localhost:8443')
  return Buffer.from(`"@method": GET\n"@authority": localhost:8443\n"@path": /challenge\n"signature-agent": ${headers['signature-agent'] ?? ''}\n"@signature-params": ${headers['signature-input'].slice(5)}`)
}

export interface SignedLoad {
  /** autocannon's `requests`: GET /challenge with the next signature of the pool. */
  requests: autocannon.Request[]
  /** Requests signed as they were sent (the pool ran out). */
  late: () => number
}

/** `count` signatures made now for the gate at `authority`. */
export function signedLoad (authority: string, count: number): SignedLoad {
  const pool = Array.from({ length: Math.ceil(count) }, () => signChallenge(authority))
  let used = 0
  let late = 0
  const next = (): SignatureHeaders => {
    if (used < pool.length) return pool[used++]!
    late++
    return signChallenge(authority)
  }
  return {
    requests: [{
      method: 'GET',
      path: '/challenge',
      setupRequest: (req: autocannon.Request) => ({ ...req, headers: { ...req.headers, ...next() } }),
    }],
    late: () => late,
  }
}
