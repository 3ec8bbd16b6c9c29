/**
 * The baseline of bench:http and bench:handshake: a bare node:https server with the gate's TLS
 * settings and HTTP limits, answering every request with a fixed response shaped like the gate's
 * GET /challenge answer (baseline-shape.ts). The ratio then measures what the gate's own work
 * costs, not a difference in bytes on the wire. Prints its port on stdout.
 * `--port N` listens there instead of a free port.
 * `--burn-us N` spins N microseconds of CPU per request first (bench:http --calibrate: how much
 * extra work per request costs how much throughput on this machine).
 */
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { BODY, HEADERS, serverOptions } from './baseline-shape.js'

const dev = process.argv[2] ?? 'certs/dev'
const portAt = process.argv.indexOf('--port')
const port = portAt === -1 ? 0 : Number(process.argv[portAt + 1])
const burnAt = process.argv.indexOf('--burn-us')
const burnNs = burnAt === -1 ? 0n : BigInt(Math.round(Number(process.argv[burnAt + 1]) * 1000))
const server = createServer(serverOptions(dev), (_req, res) => {
  if (burnNs > 0n) {
    const end = process.hrtime.bigint() + burnNs
    while (process.hrtime.bigint() < end) { /* spin */ }
  }
  res.writeHead(200, HEADERS)
  res.end(BODY)
})
server.listen(port, '127.0.0.1', () => { process.stdout.write(`${(server.address() as AddressInfo).port}\n`) })
process.on('SIGTERM', () => server.close(() => process.exit(0)))
