/**
 * The baseline of bench:http and bench:handshake: a bare node:https server with the gate's TLS
 * settings (mTLS against the same CA, TLS 1.2+, same timeouts) answering a fixed small JSON body.
 * Prints its port on stdout.
 */
import { createServer } from 'node:https'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'

const dev = process.argv[2] ?? 'certs/dev'
const body = JSON.stringify({ nonce: 'AAAAAAAAAAAAAAAAAAAAAA', seed: '0'.repeat(64), iterations: 1048576, checkpoint_interval: 16384, algorithm: 'sha256-chain-v1', issued_at: 0, deadline_ts: 0 })
const server = createServer({
  cert: readFileSync(join(dev, 'server.pem')),
  key: readFileSync(join(dev, 'server-key.pem')),
  ca: readFileSync(join(dev, 'ca.pem')),
  requestCert: true,
  rejectUnauthorized: true,
  minVersion: 'TLSv1.2',
  maxHeaderSize: 8192,
  keepAliveTimeout: 5000,
}, (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) })
  res.end(body)
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${(server.address() as AddressInfo).port}\n`) })
process.on('SIGTERM', () => server.close(() => process.exit(0)))
