/**
 * The baselines of bench:auth and bench:proxy, and their upstream. One process per role:
 *   upstream       plain node:http answering every request with a small fixed JSON body
 *   auth           bare node:https (the gate's TLS settings) that signs an X-AOG-Agent the same
 *                  way and size as the gate (same key, same signer) and answers 204
 *   proxy URL      bare node:https + an undici Pool reverse proxy to URL that signs the same
 *                  assertion and streams the answer back
 * Prints its port on stdout. The ratios then measure what the gate adds beyond the signature
 * every baseline must pay too.
 */
import { createServer as createHttps } from 'node:https'
import { createServer as createHttp, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { pipeline } from 'node:stream'
import { Pool } from 'undici'
import { serverOptions } from './baseline-shape.js'
import { createAssertionSigner, loadAssertionKeys } from '../lib/assertion.js'

const [role = 'upstream', dev = 'certs/dev', target = ''] = process.argv.slice(2)
export const UPSTREAM_BODY = JSON.stringify({ ok: true, items: [1, 2, 3], note: 'a small upstream answer' })

const signer = createAssertionSigner({ keys: loadAssertionKeys([join(dev, 'assertion-key.pem')]), issuer: 'aog', audience: 'aog-upstream', ttlSeconds: 30 })
const F = 'ab'.repeat(32)
const sign = async (req: IncomingMessage): Promise<string> => await signer.sign({ sub: F, htm: req.method ?? 'GET', htu: req.url ?? '/', cnf: { 'x5t#S256': Buffer.from(F, 'hex').toString('base64url') }, grant_exp: Date.now() + 300_000 })

let handler: (req: IncomingMessage, res: ServerResponse) => void
if (role === 'upstream') {
  handler = (_req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(UPSTREAM_BODY) }).end(UPSTREAM_BODY) }
} else if (role === 'auth') {
  handler = (req, res) => {
    sign(req).then((jws) => { res.writeHead(204, { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'x-aog-agent': jws }).end() }, () => res.destroy())
  }
} else {
  const pool = new Pool(target, { connections: 64 })
  handler = (req, res) => {
    sign(req).then(async (jws) => {
      const r = await pool.request({ path: req.url ?? '/', method: (req.method ?? 'GET') as 'GET', headers: { 'x-aog-agent': jws, host: new URL(target).host, 'x-forwarded-for': req.socket.remoteAddress ?? '' }, body: req.method === 'GET' ? null : req })
      res.writeHead(r.statusCode, r.headers as Record<string, string>)
      pipeline(r.body, res, () => {})
    }).catch(() => res.destroy())
  }
}
const server = role === 'upstream' ? createHttp({ keepAliveTimeout: 60_000 }, handler) : createHttps(serverOptions(dev), handler)
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${(server.address() as AddressInfo).port}\n`) })
process.on('SIGTERM', () => server.close(() => process.exit(0)))
