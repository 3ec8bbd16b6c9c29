/**
 * lib/keys.ts: public JWKs and RFC 7638 thumbprints, and that reading them from keys made by
 * generateKeyPairSync cannot deadlock the process as a plain JWK export can on Node 20.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { createPublicKey } from 'node:crypto'
import { jwkThumbprint, publicJwk } from '../../lib/keys.js'
import { keyPair } from '../helpers/keys.js'

t.test('publicJwk: the public members of a public key, or of a private key\'s public half', async (t) => {
  for (const [type, options] of [['ed25519', {}], ['ec', { namedCurve: 'P-256' }], ['rsa', { modulusLength: 1024 }]] as const) {
    const { publicKey, privateKey } = keyPair(type, options)
    const expected = publicKey.export({ format: 'jwk' })
    t.same(publicJwk(publicKey), expected, `${type}: public key`)
    t.same(publicJwk(privateKey), expected, `${type}: private key, public half only`)
    t.notOk('d' in publicJwk(privateKey), `${type}: no private member`)
  }
})

t.test('jwkThumbprint: RFC 7638 section 3.1, and the required members only', async (t) => {
  const rfc = {
    kty: 'RSA',
    n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
    e: 'AQAB',
    alg: 'RS256',
    kid: '2011-04-29',
  }
  t.equal(jwkThumbprint(rfc), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs')
  const ed = publicJwk(keyPair('ed25519').publicKey)
  t.equal(jwkThumbprint({ ...ed, kid: 'x', use: 'sig' }), jwkThumbprint(ed), 'optional members do not count')
  t.not(jwkThumbprint(publicJwk(keyPair('ed25519').publicKey)), jwkThumbprint(ed), 'another key, another thumbprint')
  t.equal(jwkThumbprint(createPublicKey({ key: ed, format: 'jwk' }).export({ format: 'jwk' })), jwkThumbprint(ed))
  t.throws(() => jwkThumbprint({ kty: 'oct', k: 'c2VjcmV0' }), /no thumbprint for a key of type oct/)
  t.throws(() => jwkThumbprint({ kty: 'EC', crv: 'P-256', x: 'abc' }), /a EC key without its y/)
  t.throws(() => jwkThumbprint({}), /of type undefined/)
})

/**
 * Runs `loop` over fresh generateKeyPairSync keys in a child process, which reports every 500 keys;
 * a child silent for `stallMs` is deadlocked (it spends no CPU) and is killed.
 */
async function finishes (loop: string, iterations: number, stallMs: number): Promise<{ done: boolean, stderr: string }> {
  const script = [
    "const { generateKeyPairSync, createPublicKey } = await import('node:crypto')",
    "const { jwkThumbprint, publicJwk } = await import('./dist/lib/keys.js')",
    "const { keyThumbprint } = await import('./dist/lib/webbotauth/httpsig.js')",
    "const { loadSodiumVerifier, nodeCryptoVerifier } = await import('./dist/lib/webbotauth/ed25519.js')",
    "const { localAttestationJwks } = await import('./dist/lib/attestation-signer.js')",
    'const verifier = loadSodiumVerifier().verifier ?? nodeCryptoVerifier',
    `for (let i = 1; i <= ${iterations}; i++) {`,
    "  const { publicKey, privateKey } = generateKeyPairSync('ed25519')",
    "  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })",
    `  ${loop}`,
    "  if (i % 500 === 0) process.stdout.write(i + '\\n')",
    '}',
    "console.log('done')",
  ].join('\n')
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  const timer = setTimeout(() => child.kill('SIGKILL'), stallMs)
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString()
    timer.refresh()
  })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  await new Promise((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  return { done: stdout.trimEnd().endsWith('done'), stderr }
}

t.test('keys from generateKeyPairSync: thumbprints and raw keys never deadlock', async (t) => {
  // The plain export, only to say whether this Node has the deadlock at all (not an assertion: it
  // needs a few thousand keys and some luck with the collector).
  const plain = await finishes("createPublicKey(privateKey).export({ format: 'jwk' })", 20_000, 5_000)
  t.comment(plain.done
    ? `${process.version}: a plain JWK export of 20,000 generated keys did not hang this time`
    : `${process.version}: a plain JWK export of a generated key hung (silent for 5 s, killed) ${plain.stderr}`)
  const ours = await finishes('keyThumbprint(privateKey); keyThumbprint(publicKey); jwkThumbprint(publicJwk(privateKey)); verifier.verify(Buffer.alloc(0), publicKey, Buffer.alloc(64)); verifier.verify(Buffer.alloc(0), privateKey, Buffer.alloc(64)); localAttestationJwks(ec.privateKey); localAttestationJwks(privateKey)', 20_000, 20_000)
  t.ok(ours.done, `20,000 generated Ed25519 and P-256 keys through keyThumbprint, publicJwk, the verifier's raw key and the attestation signer's key ${ours.stderr}`)
})
