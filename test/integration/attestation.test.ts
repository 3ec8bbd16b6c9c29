/** Step 7: the optional attestation JWT, with real keys (jose). */
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { startGate } from '../helpers/gate.js'
import { getChallenge, solve, submitTask, GateError } from '../../lib/client/agent.js'

async function fixture (): Promise<{ jwks: string, sign: (claims: Record<string, unknown>, alg?: string) => Promise<string> }> {
  const { publicKey, privateKey } = await generateKeyPair('ES256')
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }
  const dir = mkdtempSync(join(tmpdir(), 'aog-att-'))
  const jwks = join(dir, 'jwks.json')
  writeFileSync(jwks, JSON.stringify({ keys: [jwk] }))
  return {
    jwks,
    sign: async (claims) => await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuedAt().setExpirationTime('1m').setIssuer('https://attest.example').setAudience('aog').sign(privateKey),
  }
}

async function codeOf (p: Promise<unknown>): Promise<string> {
  try { await p } catch (err) { if (err instanceof GateError) return err.code; throw err }
  return 'accepted'
}

t.test('a required attestation must name the caller and the challenge', async (t) => {
  const f = await fixture()
  const g = await startGate(t, { attestationJwks: f.jwks, attestationIssuer: 'https://attest.example', attestationAudience: 'aog', requireAttestation: true })
  const agent = g.agent()
  const other = g.agent('agent2')
  const body = async (): Promise<ReturnType<typeof solve>> => solve(await getChallenge(agent), agent.fingerprint)

  const b1 = await body()
  t.equal(await codeOf(submitTask(agent, b1)), 'AOG_BAD_REQUEST', 'missing when required: 400 before the claim')
  t.equal(await codeOf(submitTask(agent, { ...b1, attestation: await f.sign({ sub: agent.fingerprint, nonce: b1.nonce }) })), 'accepted', 'the same nonce is still good')

  const b2 = await body()
  t.equal(await codeOf(submitTask(agent, { ...b2, attestation: await f.sign({ sub: other.fingerprint, nonce: b2.nonce }) })), 'AOG_ATTESTATION_INVALID', 'another identity')
  const b3 = await body()
  t.equal(await codeOf(submitTask(agent, { ...b3, attestation: await f.sign({ sub: agent.fingerprint, nonce: b1.nonce }) })), 'AOG_ATTESTATION_INVALID', 'another challenge')
  const b4 = await body()
  const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: agent.fingerprint, nonce: b4.nonce, exp: 9e9 })).toString('base64url')}.`
  t.equal(await codeOf(submitTask(agent, { ...b4, attestation: unsigned })), 'AOG_ATTESTATION_INVALID', 'alg none')
  const stranger = await fixture()
  const b5 = await body()
  t.equal(await codeOf(submitTask(agent, { ...b5, attestation: await stranger.sign({ sub: agent.fingerprint, nonce: b5.nonce }) })), 'AOG_ATTESTATION_INVALID', 'a key not in the JWKS')
})

t.test('an attestation sent to a gate that cannot verify one is refused, not ignored', async (t) => {
  const f = await fixture()
  const g = await startGate(t)
  const agent = g.agent()
  const b = solve(await getChallenge(agent), agent.fingerprint)
  t.equal(await codeOf(submitTask(agent, { ...b, attestation: await f.sign({ sub: agent.fingerprint, nonce: b.nonce }) })), 'AOG_ATTESTATION_INVALID')
})
