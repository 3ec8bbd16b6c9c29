// The container's health check (HEALTHCHECK in deploy/Containerfile): GET /healthz on the ops
// listener, with node itself (the slim image has no curl or wget). Exit 0 when it answers 200,
// 1 otherwise, within 2.5 s. The address is AOG_OPS_LISTEN's (default 127.0.0.1:9464); a wildcard
// address (0.0.0.0, [::]) is called on loopback.
const listen = process.env.AOG_OPS_LISTEN || '127.0.0.1:9464'
const colon = listen.lastIndexOf(':')
let host = listen.slice(0, colon)
const port = listen.slice(colon + 1)
if (host === '' || host === '0.0.0.0') host = '127.0.0.1'
else if (host === '[::]') host = '[::1]'
fetch(`http://${host}:${port}/healthz`, { signal: AbortSignal.timeout(2500) }).then(
  (res) => process.exit(res.ok ? 0 : 1),
  (err) => {
    process.stderr.write(`healthcheck: ${err.message}\n`)
    process.exit(1)
  }
)
