/**
 * The server of bench:steps: the bare baseline (bench/baseline-server.ts: same TLS settings, same
 * response bytes) with the gate's GET /challenge work added step by step, each step made by the
 * gate's own modules:
 *   0  bare: writeHead + end of a fixed response shaped like the gate's
 *   1  + the caller's identity (tlsIdentity: authorized socket, cached fingerprint)
 *   2  + a nonce and a seed from the RandomPool
 *   3  + the memory store's issue (token bucket, record kept for deadline + grace, 70 s)
 *   4  + the real body and RateLimit headers (challengeJson, jsonHeaders, rateHeaders)
 *   5  + the request log line (a request id, logger.info through the gate's logger set-up, to /dev/null)
 *   6  + the request duration histogram (prom-client, the gate's labels)
 * The last step does what the gate does for GET /challenge except routing, the request context
 * and the revocation check. Prints its port on stdout.
 *   node dist/bench/step-server.js <dev-cert-dir> --step N
 */
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { tlsIdentity } from '../lib/identity/tls.js'
import { RandomPool } from '../lib/random.js'
import { MemoryStore } from '../lib/stores/memory.js'
import { IssueStatus } from '../lib/stores/store.js'
import { challengeJson } from '../lib/handlers/challenge.js'
import { jsonHeaders, rateHeaderList } from '../lib/http/reply.js'
import { createLogger } from '../lib/log.js'
import { createMetrics } from '../lib/metrics.js'
import { BODY, HEADERS, serverOptions } from './baseline-shape.js'

const dev = process.argv[2] ?? 'certs/dev'
const stepAt = process.argv.indexOf('--step')
const step = stepAt === -1 ? 0 : Number(process.argv[stepAt + 1])
const rate = { burst: 1e9, perSecond: 1e9 }
const random = new RandomPool()
const store = new MemoryStore({ maxChallenges: 10_000_000 })
// The gate's own logger set-up (buffered, 64 KiB, byte mode), writing to /dev/null.
const logger = createLogger({ level: 'info', bufferBytes: 65536, dest: '/dev/null' })
const metrics = createMetrics()
let seq = 0

const server = createServer(serverOptions(dev), (req, res) => {
  const start = performance.now()
  const reqId = `abcdef${(++seq).toString(16).padStart(10, '0')}`
  let fingerprint = ''
  if (step >= 1) fingerprint = tlsIdentity(req.socket as TLSSocket).fingerprint
  const nonce = step >= 2 ? random.nonce() : ''
  const seed = step >= 2 ? random.hex(32) : ''
  if (step >= 3) {
    const r = store.issue({ fingerprint, rate, nonce, seed, iterations: 1 << 20, checkpointInterval: 1 << 14, deadlineMs: 10_000, graceMs: 60_000 })
    if (r instanceof Promise || r.status !== IssueStatus.OK) throw new Error('the memory store refused')
    if (step >= 4) {
      const text = challengeJson(r.challenge)
      res.writeHead(200, jsonHeaders(text, rateHeaderList(r.rate, rate.perSecond), text.length)).end(text)
    }
  }
  if (step < 4) {
    res.writeHead(200, HEADERS)
    res.end(BODY)
  }
  if (step >= 5) {
    const ms = performance.now() - start
    logger.info({ reqId, addr: req.socket.remoteAddress, fp: fingerprint.slice(0, 16), subject: 'agent', method: req.method ?? '', route: '/challenge', status: res.statusCode, durationMs: Math.round(ms * 100) / 100, outcome: 'ok' }, 'request')
    if (step >= 6) metrics.requestDuration.observe({ route: '/challenge', method: req.method ?? '', status: String(res.statusCode) }, ms / 1000)
  }
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${(server.address() as AddressInfo).port}\n`) })
process.on('SIGTERM', () => server.close(() => process.exit(0)))
