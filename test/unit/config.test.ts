import t from 'tap'
import { solveChain } from '../../lib/chain/chain.js'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, describeOptions, envName, flagName, fromEnv, loadConfig, readConfigFile, resolvePaths } from '../../lib/config.js'
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

t.test('the table names each option\'s type by its schema: a pattern is host:port or url only when it is one', async (t) => {
  const type = new Map(describeOptions().map((o) => [o.key, o.type]))
  t.equal(type.get('listen'), 'host:port')
  t.equal(type.get('redisCluster'), 'host:port')
  t.equal(type.get('redisUrl'), 'url')
  t.equal(type.get('upstream'), 'url')
  t.equal(type.get('redisPrefix'), 'string', 'a key prefix is not a host:port')
  t.equal(type.get('tlsCert'), 'string')
})

t.test('the README configuration table is the one generated from the schema', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  t.ok(readme.includes(configTable()), 'run `npm run docs:config` and paste its output into README.md')
})

t.test('keep-alive: derived above the challenge deadline when not set, kept when set', async (t) => {
  t.equal(loadConfig(tls).keepAliveTimeoutMs, 65000, 'default: 65 s, above the 10 s deadline')
  t.equal(loadConfig({ ...tls, deadlineMs: 120000 }).keepAliveTimeoutMs, 125000, 'a long deadline: deadline + 5 s')
  t.equal(loadConfig({ ...tls, keepAliveTimeoutMs: '3000' }).keepAliveTimeoutMs, 3000, 'set: kept')
  for (const deadlineMs of [100, 9999, 60000, 60001, 3_600_000]) {
    const c = loadConfig({ ...tls, deadlineMs })
    t.ok(c.keepAliveTimeoutMs > c.deadlineMs, `deadline ${deadlineMs}: keep-alive ${c.keepAliveTimeoutMs}`)
  }
})

t.test('cross-field rules refuse what can never work, naming the field', async (t) => {
  t.same(fieldsOf({ ...tls, listen: '127.0.0.1:70000' }), ['listen'], 'port beyond 65535')
  t.throws(() => loadConfig({ ...tls, opsListen: '[::1]:99999' }), /opsListen: port of \[::1\]:99999 is above 65535/)
  t.same(fieldsOf({ ...tls, redisCluster: '10.0.0.1:7000,10.0.0.2:77777' }), ['redisCluster'])
  t.same(fieldsOf({ ...tls, listen: '127.0.0.1:9000', opsListen: '127.0.0.1:9000' }), ['opsListen'], 'one address for both listeners')
  t.ok(loadConfig({ ...tls, listen: '127.0.0.1:0', opsListen: '127.0.0.1:0' }), 'port 0 twice: two free ports')
  t.same(fieldsOf({ ...tls, headersTimeoutMs: 20000, requestTimeoutMs: 10000 }), ['requestTimeoutMs'], 'Node refuses requestTimeout < headersTimeout')
  // 2^30 links at 20 ns each: 21.5 s before a pass is plausible, past the 10 s deadline.
  t.throws(() => loadConfig({ ...tls, iterations: 1 << 30, checkpointInterval: 1 << 20 }), /deadlineMs: 10000 is not above iterations x minNsPerIteration \(21475 ms\)/)
  t.same(fieldsOf({ ...tls, minNsPerIteration: 10000 }), ['deadlineMs'], '1 Mi links at 10 µs: 10.5 s')
  t.ok(loadConfig({ ...tls, iterations: 1 << 30, checkpointInterval: 1 << 20, deadlineMs: 60000 }), 'a deadline that leaves time: accepted')
  t.same(fieldsOf({ ...tls, store: 'redis', redisWaitReplicas: 1, redisWaitTimeoutMs: 500, redisCommandTimeoutMs: 500 }), ['redisWaitTimeoutMs'])
  t.ok(loadConfig({ ...tls, store: 'redis', redisWaitReplicas: 1, redisWaitTimeoutMs: 100 }))
  t.same(fieldsOf({ ...tls, upstreamMaxPerIdentity: 4 }), ['upstreamMaxPerIdentity'], 'a bound on proxied requests without an upstream')
  t.same(fieldsOf({ ...tls, upstream: 'http://127.0.0.1:9', assertionKey: 'k.pem', upstreamMaxPerIdentity: 0 }), ['upstreamMaxPerIdentity'], 'at least 1')
  t.equal(loadConfig({ ...tls, upstream: 'http://127.0.0.1:9', assertionKey: 'k.pem', upstreamMaxPerIdentity: '4' }).upstreamMaxPerIdentity, 4)
})

t.test('a --config file\'s relative paths resolve against its directory; absolute ones and other keys are kept', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-cfg-'))
  writeFileSync(join(dir, 'aog.json'), JSON.stringify({ tlsCert: 'tls/server.pem', tlsKey: '/etc/aog/key.pem', clientCa: './ca.pem', assertionKey: 'a.pem, /k/b.pem', devDir: 'dev', redisPrefix: 'x:' }))
  const raw = readConfigFile(join(dir, 'aog.json'))
  t.same(raw, { tlsCert: join(dir, 'tls/server.pem'), tlsKey: '/etc/aog/key.pem', clientCa: join(dir, 'ca.pem'), assertionKey: `${join(dir, 'a.pem')},/k/b.pem`, devDir: join(dir, 'dev'), redisPrefix: 'x:' })
  t.same(resolvePaths({ crl: 'crl.pem', listen: 'h:1' }, '/srv'), { crl: '/srv/crl.pem', listen: 'h:1' })
})
