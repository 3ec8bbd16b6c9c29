#!/usr/bin/env -S node --no-memory-reducer
// --no-memory-reducer: a gate that idles after start otherwise spends about an eighth more CPU per
// request for the rest of its life (V8's idle GC turns node's nextTick megamorphic: docs/decisions/next-tick-shape.md).
/**
 * aog-server: argv/env/file → config → createGate → listen; graceful shutdown on SIGTERM/SIGINT.
 * Every option is `--kebab-case`, `AOG_UPPER_SNAKE` or a key of `--config FILE` (JSON).
 */
import { parseArgs } from 'node:util'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import {
  ConfigError, describeOptions, flagName, fromEnv, isBooleanOption, loadConfig, readConfigFile, type Config,
} from '../lib/config.js'
import { chainKernel } from '../lib/chain/native.js'
import { isLoopbackOrPrivate } from '../lib/host-port.js'
import { ed25519VerifierChoice } from '../lib/webbotauth/ed25519.js'
import { createGate } from '../lib/gate/index.js'
import { createLogger } from '../lib/log.js'
import { createMetrics } from '../lib/metrics.js'
import { packageRoot } from '../lib/paths.js'
import { configFileProblems, redactConfig, type Problem } from '../lib/config-files.js'
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
    'aog-server check-config [options]   loads and validates the configuration and every file it names (as the',
    '                              server would, without starting), prints the effective configuration as JSON',
    '                              (credentials in URLs masked) and exits 0, or exits 2 naming every bad field',
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
  const { values } = parseArgs({ args: valuesAttached(argv, options), options, strict: true, allowPositionals: false })
  const raw: Record<string, unknown> = {}
  for (const [name, v] of Object.entries(values)) {
    const key = keyOf.get(name)
    if (key !== undefined) raw[key] = v
    const negated = name.startsWith('no-') ? keyOf.get(name.slice(3)) : undefined
    if (negated !== undefined && v === true) raw[negated] = false
  }
  return { raw, ...(typeof values.config === 'string' ? { config: values.config } : {}), help: values.help === true, version: values.version === true }
}

/**
 * `--flag value` → `--flag=value` for string options, so that a value starting with '-' (`--iterations -5`)
 * reaches the schema (which names the field) instead of util.parseArgs's "ambiguous" refusal.
 */
function valuesAttached (argv: string[], options: Record<string, { type: 'string' | 'boolean' }>): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const next = argv[i + 1]
    const isFlag = (x: string): boolean => x.startsWith('--') && options[x.slice(2).split('=')[0]!] !== undefined
    if (a === '--') { out.push(...argv.slice(i)); break }
    if (a.startsWith('--') && !a.includes('=') && options[a.slice(2)]?.type === 'string' && next !== undefined && !isFlag(next)) {
      out.push(`${a}=${next}`)
      i++
    } else out.push(a)
  }
  return out
}

/**
 * --dev: fill TLS paths from --dev-dir (default certs/dev, against the working directory), generating
 * the dev PKI there with the package's certs/gen.sh when it is missing (unless `generate` is false).
 */
function devPaths (raw: Record<string, unknown>, generate = true): Record<string, unknown> {
  const dir = resolve(typeof raw.devDir === 'string' && raw.devDir !== '' ? raw.devDir : 'certs/dev')
  if (generate && !['server.pem', 'crl.pem', 'assertion-key.pem', 'attestation-key.pem', 'signature-agents'].every((f) => existsSync(join(dir, f)))) {
    execFileSync('bash', [join(packageRoot(), 'certs', 'gen.sh'), dir], { stdio: ['ignore', 'ignore', 'inherit'] })
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

/**
 * The configuration of defaults < file < environment < flags (with the --dev paths), and every
 * problem of it and of the files it names (one per field; a field the schema refused is not re-read).
 */
function effectiveConfig (args: ReturnType<typeof parseArgv>, generateDev: boolean): { config?: Readonly<Config>, problems: Problem[] } {
  const problems: Problem[] = []
  const collect = (err: unknown): void => {
    if (!(err instanceof ConfigError)) throw err
    problems.push(...err.problems)
  }
  let file: Record<string, unknown> = {}
  try {
    if (args.config !== undefined) file = readConfigFile(args.config)
  } catch (err) { collect(err) }
  let raw = { ...file, ...fromEnv(process.env), ...args.raw }
  if (raw.dev === true || raw.dev === 'true' || raw.dev === '1') raw = devPaths(raw, generateDev)
  let config: Readonly<Config> | undefined
  try {
    config = loadConfig(raw)
  } catch (err) { collect(err) }
  const seen = new Set(problems.map((p) => p.field))
  problems.push(...configFileProblems(config ?? raw).filter((p) => !seen.has(p.field)))
  return { ...(config === undefined ? {} : { config }), problems }
}

/** `aog-server check-config [options]`: validate everything, print the effective configuration (redacted). */
function checkConfig (argv: string[]): void {
  let args: ReturnType<typeof parseArgv>
  try {
    args = parseArgv(argv)
  } catch (err) {
    process.stderr.write(`aog-server check-config: ${(err as Error).message}\n`)
    process.exit(2)
  }
  if (args.help) { process.stdout.write('Usage: aog-server check-config [options as for the server]\n'); return }
  // --dev names the dev PKI's files; check-config does not generate them.
  const { config, problems } = effectiveConfig(args, false)
  if (config === undefined || problems.length > 0) {
    process.stderr.write(`aog-server check-config: ${new ConfigError(problems).message}\n`)
    process.exit(2)
  }
  process.stdout.write(JSON.stringify(redactConfig(config), null, 2) + '\n')
  process.stderr.write('aog-server check-config: the configuration is valid\n')
}

async function main (): Promise<void> {
  if (process.argv[2] === 'check-config') {
    checkConfig(process.argv.slice(3))
    return
  }
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

  const { config, problems } = effectiveConfig(args, true)
  if (config === undefined || problems.length > 0) {
    process.stderr.write(`aog-server: ${new ConfigError(problems).message}\n`)
    process.exit(2)
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
  let addr: Awaited<ReturnType<typeof gate.listen>>
  try {
    addr = await gate.listen()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`aog-server: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }
  const chain = await gate.pool.ready()
  // Web Bot Auth's Ed25519 verifier: libsodium, or node:crypto where sodium-native is missing.
  const signatureVerifier = config.webBotAuth ? ed25519VerifierChoice() : undefined
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
    signatureVerifier: signatureVerifier?.verifier.name,
    version: version(),
  }, 'aog gate listening')
  // Forwarded mode over plain HTTP is for a proxy on the same host or a private network.
  if (config.mode === 'forwarded' && config.forwardProxyCa === undefined && !isLoopbackOrPrivate(addr.gate.address)) {
    logger.warn({ listen: config.listen }, 'forwarded mode over plain HTTP on an address that is not loopback or private: the identity headers and the bodies cross the network in clear; listen on loopback or a private interface, or require the proxy\'s certificate with --forward-proxy-ca (docs/operations.md)')
  }
  if (signatureVerifier?.verifier.name === 'node:crypto' && process.env.AOG_NATIVE !== '0') {
    logger.warn({ reason: signatureVerifier.reason }, 'libsodium unavailable: signatures are verified with node:crypto, about twice the CPU (install the optional dependency sodium-native)')
  }
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
    logger.info('SIGHUP: reloading the TLS certificate and key, the client CAs, the CRL, the deny list, the forward secrets and the log level')
    // The log level of the configuration as it is now (file < environment < flags); the rest of it needs a restart.
    let logLevel: string | undefined
    try {
      logLevel = effectiveConfig(args, false).config?.logLevel
      if (logLevel === undefined) logger.error('log level reload failed: the configuration does not load (aog-server check-config says why); keeping the current level')
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'log level reload failed; keeping the current level')
    }
    gate.reload(logLevel === undefined ? {} : { logLevel })
  })
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

main().catch((err: unknown) => {
  process.stderr.write(`aog-server: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
