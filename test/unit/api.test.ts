/**
 * The public API (lib/index.ts): exactly the curated names at run time, and the shapes an embedding
 * program relies on at the type level (this file must type-check: npm run typecheck).
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { ROOT } from '../helpers/pki.js'
import * as api from '../../lib/index.js'
import { ConfigError, loadConfig } from '../../lib/config.js'
import { PoolBusyError, StoreUnavailableError } from '../../lib/errors.js'
import { GateError } from '../../lib/client/agent.js'

t.test('the package exports exactly the curated names', async (t) => {
  t.same(Object.keys(api).sort(), [
    'ALGORITHM', 'AogError', 'AuthorizeStatus', 'BindStatus', 'ConfigError', 'ConsumeStatus', 'ERRORS', 'GateError', 'IssueStatus', 'MemoryStore',
    'StoreUnavailableError', 'TakeStatus', 'certificateFingerprint', 'chainKey', 'createAgent', 'createGate',
    'createLogger', 'createMetrics', 'fingerprintOf', 'fromEnv', 'getChallenge', 'initialDigest', 'loadConfig', 'localAttestationJwks', 'localAttestationSigner', 'pass',
    'readConfigFile', 'solve', 'solveAsync', 'solveChain', 'submitTask', 'traceHash',
  ].sort())
  t.equal(api.ALGORITHM, 'sha256-chain-v2')
})

t.test('every error class of the library carries a stable code', async (t) => {
  t.equal(new StoreUnavailableError('x').code, 'AOG_STORE_UNAVAILABLE')
  t.equal(new PoolBusyError('timeout', 'x').code, 'AOG_POOL_BUSY')
  t.equal(new GateError(503, 'AOG_OVERLOADED', 'x').code, 'AOG_OVERLOADED')
  t.equal(new api.AogError('AOG_NOT_FOUND').code, 'AOG_NOT_FOUND')
  try {
    loadConfig({ bogus: 1 })
    t.fail('expected a ConfigError')
  } catch (err) {
    t.ok(err instanceof ConfigError)
    t.equal((err as ConfigError).code, 'AOG_CONFIG_INVALID')
  }
})

t.test('the published package holds what users need and no bench, test or generator code', async (t) => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  const files = (JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path)
  for (const needed of ['dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/bin/aog-server.js', 'dist/bin/aog-agent.js', 'dist/lib/verification/worker.js', 'lua/issue.lua', 'nginx/aog.conf', 'certs/gen.sh', 'lib/native/aog_chain.c', 'README.md', 'LICENSE']) {
    t.ok(files.includes(needed), `ships ${needed}`)
  }
  const extra = files.filter((f) => /^dist\/(bench|test)\//.test(f) || /\.gen\.|docs-config|^test\/|^bench\/|^lib\/.*\.ts$/.test(f))
  t.same(extra, [], 'nothing else')
})

// Type level: checked by the compiler, never run.
type Assert<T extends true> = T
type Extends<A, B> = A extends B ? true : false
export type ApiShapes = [
  Assert<Extends<ReturnType<typeof api.createGate>, api.Gate>>,
  Assert<Extends<api.MemoryStore, api.Store>>,
  Assert<Extends<ReturnType<typeof api.solve>, api.TaskBody>>,
  Assert<Extends<Awaited<ReturnType<typeof api.pass>>, api.TaskResponse>>,
  Assert<Extends<ReturnType<typeof api.loadConfig>, Readonly<api.Config>>>,
  Assert<Extends<api.ErrorCode, keyof typeof api.ERRORS>>
]
export function internalsAreNotExported (): void {
  // @ts-expect-error the TypeScript chain is internal
  void api.iterateTs
  // @ts-expect-error the verification pool is internal
  void api.VerifyPool
  // @ts-expect-error the log's redaction list is internal
  void api.REDACT_PATHS
  // @ts-expect-error the host:port parser is internal
  void api.parseHostPort
}
