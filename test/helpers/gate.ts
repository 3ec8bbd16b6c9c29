/** Start a real gate (real TLS, dev certificates, port 0) inside the test process. */
import type { Test } from 'tap'
import { Writable } from 'node:stream'
import { Agent, request, type Dispatcher } from 'undici'
import { createGate, type Gate } from '../../lib/gate/index.js'
import { loadConfig, type Config } from '../../lib/config.js'
import { createLogger, type Logger } from '../../lib/log.js'
import { createMetrics, type Metrics } from '../../lib/metrics.js'
import type { Store } from '../../lib/stores/store.js'
import { createAgent, GateError, type AogAgent } from '../../lib/client/agent.js'
import { DEV, agentFiles, pem, type AgentName } from './pki.js'
import { join } from 'node:path'

export interface TestGate {
  gate: Gate
  config: Readonly<Config>
  url: string
  opsUrl: string
  metrics: Metrics
  logs: string[]
  /** An agent of the dev PKI, closed at teardown. */
  agent (name?: AgentName): AogAgent
  /** A raw undici request with the given agent's certificate. */
  raw (name: AgentName, path: string, opts?: Partial<Dispatcher.RequestOptions>): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, json: any }>
}

/** Test defaults: small chains, silent clock skew checks, generous rate limit. */
export const SMALL = {
  iterations: 4096,
  checkpointInterval: 256,
  minNsPerIteration: 0,
  rateBurst: 1000,
  ratePerSecond: 1000,
  workers: 2,
}

export async function startGate (t: Test, overrides: Partial<Config> = {}, deps: { store?: Store, now?: () => number, watchMs?: number, logger?: Logger } = {}): Promise<TestGate> {
  const config = loadConfig({
    listen: '127.0.0.1:0',
    opsListen: '127.0.0.1:0',
    tlsCert: join(DEV, 'server.pem'),
    tlsKey: join(DEV, 'server-key.pem'),
    clientCa: join(DEV, 'ca.pem'),
    logLevel: 'info',
    ...SMALL,
    ...overrides,
  })
  const logs: string[] = []
  const destination = new Writable({ write (chunk, _enc, cb) { logs.push(String(chunk)); cb() } })
  const logger = deps.logger ?? createLogger({ level: config.logLevel, destination })
  const metrics = createMetrics()
  const gate = createGate(config, { logger, metrics, ...deps })
  const addr = await gate.listen()
  const agents: AogAgent[] = []
  const dispatchers = new Map<string, Agent>()
  t.teardown(async () => {
    await Promise.all(agents.map((a) => a.close()))
    await Promise.all([...dispatchers.values()].map((d) => d.close()))
    await gate.close()
  })
  const url = `https://localhost:${addr.gate.port}`
  return {
    gate,
    config,
    url,
    opsUrl: `http://127.0.0.1:${addr.ops.port}`,
    metrics,
    logs,
    agent (name = 'agent') {
      const a = createAgent({ url, ...agentFiles(name), connections: 16 })
      agents.push(a)
      return a
    },
    async raw (name, path, opts = {}) {
      let d = dispatchers.get(name)
      if (d === undefined) {
        d = new Agent({ connect: { ...agentFiles(name) } })
        dispatchers.set(name, d)
      }
      const res = await request(url + path, { dispatcher: d, ...opts } as Dispatcher.RequestOptions)
      const text = await res.body.text()
      let json: any
      try { json = JSON.parse(text) } catch { json = text }
      return { status: res.statusCode, headers: res.headers, json }
    },
  }
}

/** An undici Agent presenting no client certificate (only trusting the dev CA). */
export function anonymousAgent (): Agent {
  return new Agent({ connect: { ca: pem('ca.pem') } })
}

/** The GateError a promise rejects with; fails when it resolves or rejects with anything else. */
export async function refusedWith (p: Promise<unknown>): Promise<GateError> {
  try {
    await p
  } catch (err) {
    if (err instanceof GateError) return err
    throw err
  }
  throw new Error('expected the gate to refuse')
}
