/** Paths of the dev PKI made by certs/gen.sh (npm test's pretest step runs it). */
import { existsSync, readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const DEV = join(ROOT, 'certs', 'dev')

if (!existsSync(join(DEV, 'crl.pem'))) execFileSync('bash', [join(ROOT, 'certs', 'gen.sh')], { stdio: 'ignore' })

export type AgentName = 'agent' | 'agent2' | 'rogue' | 'expired' | 'revoked'

export function pem (name: string): Buffer {
  return readFileSync(join(DEV, name))
}

export function agentFiles (name: AgentName): { cert: Buffer, key: Buffer, ca: Buffer } {
  return { cert: pem(`${name}.pem`), key: pem(`${name}-key.pem`), ca: pem('ca.pem') }
}
