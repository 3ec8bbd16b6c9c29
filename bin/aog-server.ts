#!/usr/bin/env node
/**
 * aog-server: argv/env/file → config → createGate → listen; graceful shutdown on SIGTERM/SIGINT.
 * Every option is `--kebab-case`, `AOG_UPPER_SNAKE` or a key of `--config FILE` (JSON).
 */
import { parseArgs } from 'node:util'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  ConfigError, describeOptions, flagName, fromEnv, isBooleanOption, loadConfig, readConfigFile, type Config,
} from '../lib/config.js'
import { chainKernel } from '../lib/chain/native.js'
import { createGate } from '../lib/gate/index.js'
import { createLogger } from '../lib/log.js'
import { createMetrics } from '../lib/metrics.js'
import { packageRoot } from '../lib/paths.js'
import { EXAMPLE, renderNginxConfig, type NginxOptions } from '../lib/nginx-config.js'
import { jwksCommand } from '../lib/assertion.js'
import { openApiDocument } from '../lib/openapi.js'

function usage (): string {
  const rows = describeOptions().map((o) => {
    const flag = o.type === 'boolean' ? `${o.flag}, --no-${o.flag.slice(2)}` : `${o.flag} <${o.type.includes('|') ? o.type.replace(/ \\\| /g, '|') : o.type}>`
    const def = o.default === undefined ? '' : ` (default: ${String(o.default)})`
    return `  ${flag.padEnd(34)} ${o.description}${def}\n  ${''.padEnd(34)} env ${o.env}`
  })
  return [
    'Usage: aog-server [options]',
    '',
    'The Agent-Only Access Gate. Every option may also be given as an environment variable or in',
    'a JSON file (--config), keys in camelCase. Precedence: defaults < file < environment < flags.',
    '',
    '  --config <file>                    JSON configuration file',
    '  --help, -h                         print this help',
    '  --version, -v                      print the version',
    ...rows,
    '',
    'Quick start with generated dev certificates:  aog-server --dev',
    '',
    'aog-server jwks KEY_FILE...   prints the JWKS of --assertion-key files (the public keys that verify X-AOG-Agent)',
    '',
    'aog-server openapi            prints the OpenAPI 3.1 document of the agent-facing API (as the gate serves it',
    '                              at GET /.well-known/aog/openapi.json)',
    '',
    'aog-server nginx-config [--listen 443] [--server-name NAME] [--server-cert FILE] [--server-key FILE]',
    '    [--client-ca FILE] [--crl FILE] [--secret-file FILE] [--js-path DIR] [--max-body SIZE]',
    '    [--upstream HOST:PORT[,HOST:PORT…]]… [--max-fails 3] [--fail-timeout 10s]',
    '    [--protect http://HOST:PORT[/PREFIX]] [--protect-max-body 100m] [--web-bot-auth]',
    '    prints an nginx configuration for forwarded mode (see docs/operations.md). --upstream, repeated',
    '    or comma-separated: the gate instances. --protect: nginx also fronts the protected application,',
    '    each request authorized by the gate\'s GET /auth (needs --assertion-key on the gate).',
  ].join('\n')
}

/** `aog-server nginx-config …`: print the reference nginx configuration for the given paths. */
function nginxConfig (argv: string[]): void {
  const names: Array<[keyof NginxOptions, string]> = [['listen', 'listen'], ['serverName', 'server-name'], ['serverCert', 'server-cert'],
    ['serverKey', 'server-key'], ['clientCa', 'client-ca'], ['crl', 'crl'], ['secretFile', 'secret-file'], ['jsPath', 'js-path'],
    ['maxBody', 'max-body'], ['failTimeout', 'fail-timeout'], ['protect', 'protect'], ['protectMaxBody', 'protect-max-body']]
  const { values } = parseArgs({
    args: argv,
    options: {
      ...Object.fromEntries(names.map(([, f]) => [f, { type: 'string' as const }])),
      upstream: { type: 'string', multiple: true },
      'max-fails': { type: 'string' },
      'web-bot-auth': { type: 'boolean' },
    },
    strict: true,
  })
  // The example's paths are the defaults; the protected application is only there when asked for.
  const opts: NginxOptions = { ...EXAMPLE, protect: undefined, webBotAuth: values['web-bot-auth'] === true }
  for (const [k, f] of names) {
    const v = (values as Record<string, unknown>)[f]
    if (typeof v === 'string') (opts as unknown as Record<string, string>)[k] = v
  }
  if (values.upstream !== undefined) opts.upstream = values.upstream
  const maxFails = values['max-fails']
  if (maxFails !== undefined) {
    if (!/^[0-9]+$/.test(maxFails)) throw new Error(`--max-fails must be an integer >= 0: ${maxFails}`)
    opts.maxFails = Number(maxFails)
  }
  process.stdout.write(renderNginxConfig(opts))
}

function version (): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version
}

function parseArgv (argv: string[]): { raw: Record<string, unknown>, config?: string, help: boolean, version: boolean } {
  const options: Record<string, { type: 'string' | 'boolean', short?: string }> = {
    config: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean', short: 'v' },
  }
  const keyOf = new Map<string, string>()
  for (const o of describeOptions()) {
    const name = flagName(o.key)
    keyOf.set(name, o.key)
    options[name] = { type: isBooleanOption(o.key) ? 'boolean' : 'string' }
    // --no-FLAG turns a boolean off (util.parseArgs on Node 20 has no allowNegative).
    if (isBooleanOption(o.key)) options[`no-${name}`] = { type: 'boolean' }
  }
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false })
  const raw: Record<string, unknown> = {}
  for (const [name, v] of Object.entries(values)) {
    const key = keyOf.get(name)
    if (key !== undefined) raw[key] = v
    const negated = name.startsWith('no-') ? keyOf.get(name.slice(3)) : undefined
    if (negated !== undefined && v === true) raw[negated] = false
  }
  return { raw, ...(typeof values.config === 'string' ? { config: values.config } : {}), help: values.help === true, version: values.version === true }
}

/** --dev: fill TLS paths from certs/dev/, generating the dev PKI when it is missing. */
function devPaths (raw: Record<string, unknown>): Record<string, unknown> {
  const root = packageRoot()
  const dir = join(root, 'certs', 'dev')
  if (!['server.pem', 'crl.pem', 'assertion-key.pem', 'attestation-key.pem', 'signature-agents'].every((f) => existsSync(join(dir, f)))) {
    execFileSync('bash', [join(root, 'certs', 'gen.sh'), dir], { stdio: ['ignore', 'ignore', 'inherit'] })
  }
  return {
    forwardSecretFile: join(dir, 'forward-secret'),
    tlsCert: join(dir, 'server.pem'),
    tlsKey: join(dir, 'server-key.pem'),
    clientCa: join(dir, 'ca.pem'),
    crl: join(dir, 'crl.pem'),
    assertionKey: join(dir, 'assertion-key.pem'),
    // With --web-bot-auth: the dev agent's directory (certs/dev/signing-jwks.json, pinned).
    ...(raw.webBotAuth === true || raw.webBotAuth === 'true' || raw.webBotAuth === '1' ? { signatureAgents: join(dir, 'signature-agents') } : {}),
    ...raw,
  }
}

async function main (): Promise<void> {
  if (process.argv[2] === 'jwks') {
    // The public keys of --assertion-key files (arguments, or the configured ones): what an upstream verifies X-AOG-Agent with.
    try {
      const files = process.argv.slice(3).length > 0 ? process.argv.slice(3) : (process.env.AOG_ASSERTION_KEY ?? '').split(',').filter((f) => f.trim() !== '')
      if (files.length === 0) throw new Error('usage: aog-server jwks KEY_FILE... (or AOG_ASSERTION_KEY)')
      process.stdout.write(jwksCommand(files.map((f) => f.trim())))
    } catch (err) {
      process.stderr.write(`aog-server jwks: ${(err as Error).message}\n`)
      process.exit(2)
    }
    return
  }
  if (process.argv[2] === 'openapi') {
    if (process.argv.length > 3) {
      process.stderr.write('aog-server openapi: takes no arguments (usage: aog-server openapi > openapi.json)\n')
      process.exit(2)
    }
    process.stdout.write(JSON.stringify(openApiDocument(), null, 2) + '\n')
    return
  }
  if (process.argv[2] === 'nginx-config') {
    try {
      nginxConfig(process.argv.slice(3))
    } catch (err) {
      process.stderr.write(`aog-server nginx-config: ${(err as Error).message}\n`)
      process.exit(2)
    }
    return
  }
  let args: ReturnType<typeof parseArgv>
  try {
    args = parseArgv(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`aog-server: ${(err as Error).message}\nRun aog-server --help for the options.\n`)
    process.exit(2)
  }
  if (args.help) { process.stdout.write(usage() + '\n'); return }
  if (args.version) { process.stdout.write(version() + '\n'); return }

  let config: Readonly<Config>
  try {
    let raw = { ...(args.config === undefined ? {} : readConfigFile(args.config)), ...fromEnv(process.env), ...args.raw }
    const dev = raw.dev === true || raw.dev === 'true' || raw.dev === '1'
    if (dev) raw = devPaths(raw)
    config = loadConfig(raw)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`aog-server: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }

  const logger = createLogger({ level: config.logLevel, bufferBytes: config.logBufferBytes })
  const metrics = createMetrics()
  let gate: ReturnType<typeof createGate>
  try {
    gate = createGate(config, { logger, metrics })
  } catch (err) {
    // Files named by the configuration are read here: a bad one is a configuration error too.
    if (err instanceof ConfigError) {
      process.stderr.write(`aog-server: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }
  const addr = await gate.listen()
  const chain = await gate.pool.ready()
  const host = (a: { address: string, family: string }): string => a.family === 'IPv6' ? `[${a.address}]` : a.address
  logger.info({
    gate: `${config.mode === 'forwarded' && config.forwardProxyCa === undefined ? 'http' : 'https'}://${host(addr.gate)}:${addr.gate.port}`,
    ops: `http://${host(addr.ops)}:${addr.ops.port}`,
    mode: config.mode,
    store: gate.store.kind,
    chain,
    chainKernel: chainKernel(chain),
    workers: config.workers,
    iterations: config.iterations,
    verify: config.verify,
    version: version(),
  }, 'aog gate listening')
  logger.flush() // the start-up line now, not at the next periodic flush

  // Fail closed, start anyway: until the store answers, both endpoints answer 503 and /readyz too.
  gate.store.ping().catch((err: Error) => logger.warn({ store: gate.store.kind, err: err.message }, 'store not reachable yet; answering 503 until it is'))

  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now')
      process.exit(1)
    }
    stopping = true
    logger.info({ signal, inflight: gate.inflight }, 'shutting down: finishing in-flight requests')
    gate.close().then(() => {
      logger.info('shut down cleanly')
      logger.flush()
      process.exit(0)
    }, (err: unknown) => {
      logger.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading the CRL, the deny list and the forward secrets')
    gate.reload()
  })
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

main().catch((err: unknown) => {
  process.stderr.write(`aog-server: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
