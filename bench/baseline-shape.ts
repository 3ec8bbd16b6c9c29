/**
 * What the baseline servers (baseline-server.ts, step-server.ts) share with the gate: its TLS
 * settings (mTLS against the same CA, TLS 1.2+), HTTP limits (8 KiB headers, the default timeouts),
 * and a fixed response shaped like its GET /challenge answer (the same header names, a body of the
 * same length), so that a ratio measures the gate's own work, not bytes on the wire.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ServerOptions } from 'node:https'

export function serverOptions (dev: string): ServerOptions {
  return {
    cert: readFileSync(join(dev, 'server.pem')),
    key: readFileSync(join(dev, 'server-key.pem')),
    ca: readFileSync(join(dev, 'ca.pem')),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    maxHeaderSize: 8192,
    headersTimeout: 10000,
    requestTimeout: 30000,
    keepAliveTimeout: 5000,
  }
}

export const BODY = JSON.stringify({ nonce: 'AAAAAAAAAAAAAAAAAAAAAA', seed: '0'.repeat(64), iterations: 1048576, checkpoint_interval: 16384, algorithm: 'sha256-chain-v2', issued_at: 1700000000000, deadline_ts: 1700000010000 })

export const HEADERS = [
  'cache-control', 'no-store', 'x-content-type-options', 'nosniff', 'content-type', 'application/json',
  'content-length', String(Buffer.byteLength(BODY)),
  'ratelimit-policy', '"identity";q=1000000000;w=1', 'ratelimit', '"identity";r=999999999;t=1',
]
