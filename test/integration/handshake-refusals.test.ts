/**
 * Refused handshakes (direct mode) are visible: one info line per reason with the reason OpenSSL
 * gives, at most one per reason every 10 s (a flood writes a bounded number of lines), and every
 * one counted by reason in aog_tls_handshake_failures_total.
 */
import t from 'tap'
import { join } from 'node:path'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { request } from 'undici'
import { startGate, type TestGate } from '../helpers/gate.js'
import { DEV, agentFiles, pem } from '../helpers/pki.js'

/** One handshake; resolves 'ok' or the client's error code once the connection is over. */
async function handshake (g: TestGate, opts: ConnectionOptions): Promise<string> {
  const socket = tlsConnect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ca: pem('ca.pem'), ...opts })
  return await new Promise((resolve) => {
    // TLS 1.3: the client's handshake completes before the server has judged its certificate; the
    // refusal arrives as an alert on the first read.
    socket.once('secureConnect', () => { socket.write('GET /challenge HTTP/1.1\r\nhost: localhost\r\n\r\n') })
    socket.once('data', () => { socket.destroy(); resolve('ok') })
    socket.once('error', (err: NodeJS.ErrnoException) => { socket.destroy(); resolve(err.code ?? err.message) })
    socket.once('close', () => resolve('closed'))
  })
}

async function metric (g: TestGate, reason: string): Promise<number> {
  const text = await (await request(g.opsUrl + '/metrics')).body.text()
  const m = new RegExp(`^aog_tls_handshake_failures_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

const refusalLines = (g: TestGate): any[] => g.logs.join('').split('\n').filter((l) => l.includes('TLS handshake refused')).map((l) => JSON.parse(l))

t.test('a revoked agent\'s refused handshake is logged at info with OpenSSL\'s reason and counted', async (t) => {
  const g = await startGate(t, { crl: join(DEV, 'crl.pem') })
  t.equal(await handshake(g, agentFiles('agent')), 'ok', 'an agent in good standing')
  t.not(await handshake(g, agentFiles('revoked')), 'ok', 'the revoked agent is refused')
  const lines = refusalLines(g)
  t.equal(lines.length, 1, 'one line')
  t.match(lines[0], { level: 30, reason: 'cert_revoked', verifyError: 'CERT_REVOKED', client: /127\.0\.0\.1/ }, 'at info, with the reason and the client')
  t.equal(await metric(g, 'cert_revoked'), 1, 'counted by reason')
  t.not(await handshake(g, agentFiles('rogue')), 'ok', 'an agent of another CA')
  t.match(refusalLines(g)[1], { reason: /^(unable_to_get_issuer_cert|unable_to_verify_leaf_signature|unable_to_get_issuer_cert_locally)$/ }, 'another reason, its own line')
})

t.test('a flood of 1000 refused handshakes writes a bounded number of lines and counts every one', async (t) => {
  const g = await startGate(t)
  const start = Date.now()
  let done = 0
  const worker = async (): Promise<void> => {
    while (done < 1000) {
      done++
      await handshake(g, {}) // no client certificate
    }
  }
  await Promise.all(Array.from({ length: 25 }, worker))
  const lines = refusalLines(g)
  const reasons = new Set(lines.map((l) => l.reason))
  t.ok(lines.length >= 1, 'logged')
  // One line per reason per started 10 s.
  const periods = Math.ceil((Date.now() - start) / 10_000)
  t.ok(lines.length <= periods * reasons.size, `${lines.length} lines for ${reasons.size} reason(s) in ${periods} period(s) of 10 s`)
  t.ok(lines.slice(1).every((l) => l.suppressed > 0), 'each later line says how many were not logged')
  let counted = 0
  for (const r of reasons) counted += await metric(g, r)
  t.equal(counted, 1000, 'every refusal counted')
  t.ok(g.logs.length < 50, `the whole log is ${g.logs.length} lines`)
})
