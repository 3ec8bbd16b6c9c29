import t from 'tap'
import { solveChain } from '../../lib/chain/chain.js'
import { readFileSync } from 'node:fs'
import { ConfigError, describeOptions, envName, flagName, fromEnv, loadConfig } from '../../lib/config.js'
import { configTable } from '../../lib/docs-config.js'

const tls = { tlsCert: 'a.pem', tlsKey: 'k.pem', clientCa: 'ca.pem' }

t.test('defaults follow the issue and the protocol', async (t) => {
  const c = loadConfig(tls)
  t.match(c, {
    listen: '127.0.0.1:8443',
    opsListen: '127.0.0.1:9464',
    store: 'memory',
    iterations: 1048576,
    checkpointInterval: 16384,
    deadlineMs: 10000,
    verify: 'sampled',
    samples: 8,
    requireCheckpoints: true,
    maxBodyBytes: 65536,
    logLevel: 'info',
    logBufferBytes: 65536,
    dev: false,
  })
  t.ok(Object.isFrozen(c), 'frozen')
})

t.test('strings from argv and env are coerced, booleans included', async (t) => {
  const c = loadConfig({ ...tls, iterations: '2048', checkpointInterval: '64', requireCheckpoints: '0', ratePerSecond: '2.5' })
  t.equal(c.iterations, 2048)
  t.equal(c.requireCheckpoints, false)
  t.equal(c.ratePerSecond, 2.5)
})

function fieldsOf (raw: Record<string, unknown>): string[] {
  try {
    loadConfig(raw)
  } catch (err) {
    if (err instanceof ConfigError) return err.fields
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('a bad configuration names every bad field', async (t) => {
  t.same(fieldsOf({ iterations: 'lots', verify: 'maybe', bogus: 1 }).sort(), ['bogus', 'iterations', 'verify'])
  t.throws(() => loadConfig({ verify: 'maybe' }), /verify: must be one of: full, sampled/)
  t.same(fieldsOf({ ...tls, iterations: 1000, checkpointInterval: 3 }), ['checkpointInterval'])
  t.same(fieldsOf({ ...tls, iterations: 1 << 20, checkpointInterval: 512 }), ['checkpointInterval'], 'm > 1024')
  t.same(fieldsOf({}), ['tlsCert', 'tlsKey', 'clientCa'], 'TLS files are required without --dev')
  t.same(fieldsOf({ ...tls, listen: 'nowhere' }), ['listen'])
  t.same(fieldsOf({ ...tls, requireAttestation: true }), ['attestationJwks'])
})

t.test('a body limit no honest submission fits is refused; an unset one is derived from N/k', async (t) => {
  // N/k = 1024 checkpoints: an honest body is about 70 KB, over the 64 KiB default.
  const shape = { ...tls, iterations: 16777216, checkpointInterval: 16384 }
  t.same(fieldsOf({ ...shape, maxBodyBytes: 65536 }), ['maxBodyBytes'], 'set explicitly too low: refused')
  t.throws(() => loadConfig({ ...shape, maxBodyBytes: '65536' }), /maxBodyBytes: 65536 is below the largest honest POST \/task body \(69967 bytes for 1024 checkpoints\)/)
  const derived = loadConfig(shape)
  t.equal(derived.maxBodyBytes, 69967, 'not set: raised to the largest honest body')
  t.equal(loadConfig({ ...shape, maxBodyBytes: 70000 }).maxBodyBytes, 70000, 'set high enough: kept')
  t.equal(loadConfig(tls).maxBodyBytes, 65536, 'the defaults (64 checkpoints) keep 64 KiB')
  const honest = solveChain({ seed: 'ab'.repeat(32), nonce: 'AAAAAAAAAAAAAAAAAAAAAA', iterations: 1024, checkpoint_interval: 1 }, 'cd'.repeat(32))
  const pythonStyle = JSON.stringify({ nonce: 'AAAAAAAAAAAAAAAAAAAAAA', ...honest, runtime_ms: 86399999.999, client_fingerprint: 'cd'.repeat(32) }).replace(/[:,]/g, (c) => c + ' ')
  t.ok(Buffer.byteLength(pythonStyle) <= derived.maxBodyBytes, 'a real 1024-checkpoint body written as Python writes it fits the derived limit')
  const withAttestation = loadConfig({ ...shape, requireAttestation: true, attestationJwks: 'jwks.json' })
  t.ok(withAttestation.maxBodyBytes >= 69967 + 16384, 'room for the longest attestation too')
})

t.test('every option has a flag, an environment variable and a description', async (t) => {
  t.equal(flagName('checkpointInterval'), 'checkpoint-interval')
  t.equal(envName('checkpointInterval'), 'AOG_CHECKPOINT_INTERVAL')
  t.same(fromEnv({ AOG_ITERATIONS: '64', AOG_UNRELATED_THING: 'x', PATH: '/bin' }), { iterations: '64' })
  for (const o of describeOptions()) t.ok(o.description.length > 10, `${o.key} is described`)
})

t.test('the README configuration table is the one generated from the schema', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  t.ok(readme.includes(configTable()), 'run `npm run docs:config` and paste its output into README.md')
})
