// A protected upstream to try the gate with: answers every request with JSON saying what it got.
//   node docs/examples/echo-upstream.mjs            # http://127.0.0.1:9000 (PORT and HOST to change)
//   aog-server --dev --upstream http://127.0.0.1:9000
// X-AOG-Agent, the gate's signed assertion of who called, is only DECODED here, NOT verified: a real
// upstream verifies it against the gate's JWKS (GET /.well-known/jwks.json on the ops listener,
// e.g. with jose's jwtVerify) and checks iss, aud, exp, htm and htu before trusting any claim.
import { createServer } from 'node:http'

/** The header and claims of a compact JWS, decoded without any check; null when malformed. */
function decode (jws) {
  const parts = typeof jws === 'string' ? jws.split('.') : []
  if (parts.length !== 3) return null
  try {
    const json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'))
    return { verified: false, header: json(parts[0]), claims: json(parts[1]) }
  } catch {
    return null
  }
}

const server = createServer((req, res) => {
  let bytes = 0
  req.on('data', (chunk) => { bytes += chunk.length })
  req.on('end', () => {
    const body = JSON.stringify({
      method: req.method,
      path: req.url,
      body_bytes: bytes,
      agent: decode(req.headers['x-aog-agent']), // null: the request did not come through the gate
    }, null, 2)
    res.writeHead(200, { 'content-type': 'application/json' }).end(body + '\n')
  })
})

server.listen(Number(process.env.PORT ?? 9000), process.env.HOST ?? '127.0.0.1', () => {
  const { address, port } = server.address()
  console.log(`echo upstream listening on http://${address}:${port}`)
})
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => server.close())
