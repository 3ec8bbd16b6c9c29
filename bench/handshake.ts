/**
 * bench:handshake — new mTLS connections per second (full handshakes, no session reuse) against the
 * gate and against a bare node:https server with the same TLS settings (the baseline), measured in
 * the same run.
 *   npm run bench:handshake [-- --duration 5 --concurrency 16]
 */
import { connect } from 'node:tls'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DEV, startBaseline, startGateProcess } from './servers.js'
import { machine, table } from './util.js'

const { values } = parseArgs({ options: { duration: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '16' } } })
const tls = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')), servername: 'localhost' }

async function handshakes (port: number, seconds: number): Promise<number> {
  let n = 0
  const end = Date.now() + seconds * 1000
  await Promise.all(Array.from({ length: Number(values.concurrency) }, async () => {
    while (Date.now() < end) {
      await new Promise<void>((resolve, reject) => {
        const s = connect({ ...tls, port, host: '127.0.0.1' }, () => { n++; s.destroy(); resolve() })
        s.once('error', reject)
      })
    }
  }))
  return n / seconds
}

const d = Number(values.duration)
const baseline = await startBaseline()
await handshakes(baseline.port, 1)
const base = await handshakes(baseline.port, d)
baseline.stop()
const gate = await startGateProcess()
await handshakes(gate.port, 1)
const g = await handshakes(gate.port, d)
gate.stop()
console.log(`bench:handshake  ${machine()}  ${values.concurrency} concurrent, ${d} s, full mTLS handshakes (ECDSA P-256)`)
console.log(table([
  { target: 'bare node:https (baseline)', 'handshakes/s': Math.round(base).toLocaleString('en'), ratio: '1.00x' },
  { target: 'gate', 'handshakes/s': Math.round(g).toLocaleString('en'), ratio: `${(g / base).toFixed(2)}x` },
]))
process.exit(0)
