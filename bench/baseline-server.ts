/**
 * The baseline of bench:http and bench:handshake: a bare node:https server with the gate's TLS
 * settings (mTLS against the same CA, TLS 1.2+) and HTTP limits (8 KiB headers, the default
 * timeouts), answering every request with a fixed response shaped like the gate's GET /challenge
 * answer: the same header names, a body of the same length. The ratio then measures what the
 * gate's own work costs, not a difference in bytes on the wire. Prints its port on stdout.
 * `--port N` listens there instead of a free port.
 * `--burn-us N` spins N microseconds of CPU per request first (bench:http --calibrate: how much
 * extra work per request costs how much throughput on this machine).
 */
import { createServer } from 'node:https'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'

const dev = process.argv[2] ?? 'certs/dev'
const portAt = process.argv.indexOf('--port')
const port = portAt === -1 ? 0 : Number(process.argv[portAt + 1])
const burnAt = process.argv.indexOf('--burn-us')
const burnNs = burnAt === -1 ? 0n : BigInt(Math.round(Number(process.argv[burnAt + 1]) * 1000))
const body = JSON.stringify({ nonce: 'AAAAAAAAAAAAAAAAAAAAAA', seed: '0'.repeat(64), iterations: 1048576, checkpoint_interval: 16384, algorithm: 'sha256-chain-v1', issued_at: 1700000000000, deadline_ts: 1700000010000 })
const headers = [
  'cache-control', 'no-store', 'x-content-type-options', 'nosniff', 'content-type', 'application/json',
  'content-length', String(Buffer.byteLength(body)),
  'ratelimit-policy', '"identity";q=1000000000;w=1', 'ratelimit', '"identity";r=999999999;t=1',
]
const server = createServer({
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
}, (_req, res) => {
  if (burnNs > 0n) {
    const end = process.hrtime.bigint() + burnNs
    while (process.hrtime.bigint() < end) { /* spin */ }
  }
  res.writeHead(200, headers)
  res.end(body)
})
server.listen(port, '127.0.0.1', () => { process.stdout.write(`${(server.address() as AddressInfo).port}\n`) })
process.on('SIGTERM', () => server.close(() => process.exit(0)))
