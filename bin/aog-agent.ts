#!/usr/bin/env node
/**
 * aog-agent: fetch, solve, submit. Prints one JSON line per attempt and a summary line; exits 1
 * when any attempt failed, 2 on bad usage.
 *
 * aog-agent request PATH: a protected request through the gate (passing it when needed), curl-like.
 */
import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { createPrivateKey, type JsonWebKey, type KeyObject } from 'node:crypto'
import { once } from 'node:events'
import { createAgent, localAttestationSigner, pass, GateError, type AogAgent, type FetchInit } from '../lib/client/agent.js'

const USAGE = `Usage: aog-agent --url URL (--cert FILE --key FILE | --sign-key FILE --signature-agent URL) [--ca FILE]
                 [--count N] [--concurrency C] [--attestation-key FILE --attestation-issuer ISS [--attestation-audience AUD]]

  --url URL          the gate, e.g. https://localhost:8443
  --cert FILE        client certificate (PEM)
  --key FILE         client private key (PEM)
  --ca FILE          CA that signed the gate's certificate (PEM)
  --sign-key FILE    Web Bot Auth instead of a certificate: sign every request (RFC 9421) with this
                     Ed25519 private key (PEM or JWK; certs/gen.sh makes signing-key.pem)
  --signature-agent URL  the key's directory (Signature-Agent), one the gate allows; required with --sign-key
  --count N          attempts (default 1)
  --concurrency C    attempts in flight at once (default 1)
  --attestation-key FILE       sign a development attestation for each submission with this private
                               key (PEM or JWK, Ed25519 or P-256; certs/gen.sh makes attestation-key.pem):
                               claims iss, aud, sub = the certificate's fingerprint, nonce = the challenge's
  --attestation-issuer ISS     its iss (the gate's --attestation-issuer); required with --attestation-key
  --attestation-audience AUD   its aud (the gate's --attestation-audience), when the gate requires one
  --help, -h         print this help

Output: one JSON line per attempt {attempt, status, nonce, runtime_ms, verification | code, detail},
then {summary: true, attempts, passed, failed, elapsed_ms}.

A protected request through the gate to its upstream: aog-agent request --help`

const REQUEST_USAGE = `Usage: aog-agent request --url URL --cert FILE --key FILE [--ca FILE] [--method M]
                         [--data STRING|@FILE] [-H 'Name: value']... [-i] PATH

A protected request (docs/protocol.md section 7): sends PATH (with its query) through the gate to its
upstream, passing the gate first when the identity holds no live grant, and prints the response body.

  --url, --cert, --key, --ca   as for aog-agent
  --attestation-key, --attestation-issuer, --attestation-audience
                               as for aog-agent: the passes made on the way are attested
  --method M, -X M       request method (default GET, or POST with --data)
  --data D, -d D         request body, sent as is: the string D, or the contents of FILE with @FILE (@- for stdin)
  --header H, -H H       request header 'Name: value' (repeatable)
  --include, -i          print the status line and the response headers first, like curl -i
  --help, -h             print this help

Exit status: 0 for a 2xx answer of the upstream, 1 otherwise (a refusal of the gate itself prints its
problem JSON on stderr), 2 on bad usage.`

const TLS_OPTIONS = {
  url: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  ca: { type: 'string' },
  'sign-key': { type: 'string' },
  'signature-agent': { type: 'string' },
  'attestation-key': { type: 'string' },
  'attestation-issuer': { type: 'string' },
  'attestation-audience': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

/**
 * The agent of --url, --cert, --key, --ca and the attestation options (the files are read here: a
 * bad path or key throws).
 */
function agentOf (values: Record<string, unknown>, connections: number): AogAgent {
  const attestationKey = values['attestation-key']
  const audience = values['attestation-audience']
  const signKey = values['sign-key']
  return createAgent({
    url: values.url as string,
    ...(typeof signKey === 'string'
      ? { signing: { key: signingKeyFile(signKey), directoryUrl: values['signature-agent'] as string } }
      : { cert: readFileSync(values.cert as string), key: readFileSync(values.key as string) }),
    ...(typeof values.ca === 'string' ? { ca: readFileSync(values.ca) } : {}),
    connections,
    ...(typeof attestationKey === 'string'
      ? {
          attestation: localAttestationSigner({
            key: attestationKey,
            issuer: values['attestation-issuer'] as string,
            ...(typeof audience === 'string' ? { audience } : {}),
          }),
        }
      : {}),
  })
}

/** An Ed25519 private key file, PEM or JWK. */
function signingKeyFile (file: string): KeyObject {
  const text = readFileSync(file, 'utf8')
  return text.trimStart().startsWith('{') ? createPrivateKey({ key: JSON.parse(text) as JsonWebKey, format: 'jwk' }) : createPrivateKey(text)
}

/** The required options that are missing, and the ones that need another. */
function missingTls (values: Record<string, unknown>): string[] {
  const signing = typeof values['sign-key'] === 'string' || typeof values['signature-agent'] === 'string'
  const missing = (signing ? ['url', 'sign-key', 'signature-agent'] : ['url', 'cert', 'key']).filter((k) => typeof values[k] !== 'string')
  const attesting = ['attestation-key', 'attestation-issuer', 'attestation-audience'].some((k) => typeof values[k] === 'string')
  if (attesting) missing.push(...['attestation-key', 'attestation-issuer'].filter((k) => typeof values[k] !== 'string'))
  return missing
}

async function main (): Promise<number> {
  let values: Record<string, string | boolean | undefined>
  try {
    ({ values } = parseArgs({
      options: {
        ...TLS_OPTIONS,
        count: { type: 'string', default: '1' },
        concurrency: { type: 'string', default: '1' },
      },
      strict: true,
    }))
  } catch (err) {
    process.stderr.write(`aog-agent: ${(err as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (values.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
  const count = Number(values.count)
  const concurrency = Number(values.concurrency)
  const missing = missingTls(values)
  if (missing.length > 0 || !Number.isInteger(count) || count < 1 || !Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write(`aog-agent: ${missing.length > 0 ? 'missing --' + missing.join(', --') : '--count and --concurrency must be positive integers'}\n${USAGE}\n`)
    return 2
  }
  let agent: AogAgent
  try {
    agent = agentOf(values, concurrency)
  } catch (err) {
    process.stderr.write(`aog-agent: ${(err as Error).message}\n`)
    return 2
  }
  const t0 = Date.now()
  let next = 0
  let passed = 0
  let failed = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const attempt = ++next
      try {
        const r = await pass(agent)
        passed++
        process.stdout.write(JSON.stringify({ attempt, status: 200, nonce: r.nonce, runtime_ms: r.runtime_ms, verification: r.verification }) + '\n')
      } catch (err) {
        failed++
        const line = err instanceof GateError
          ? { attempt, status: err.status, code: err.code, detail: err.message }
          : { attempt, status: 0, code: (err as NodeJS.ErrnoException).code ?? 'ERROR', detail: (err as Error).message }
        process.stdout.write(JSON.stringify(line) + '\n')
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  await agent.close()
  process.stdout.write(JSON.stringify({ summary: true, attempts: count, passed, failed, elapsed_ms: Date.now() - t0 }) + '\n')
  return failed === 0 ? 0 : 1
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** -H 'Name: value' into the headers object (a repeated name gives several values); false if malformed. */
function addHeader (headers: Record<string, string | string[]>, h: string): boolean {
  const i = h.indexOf(':')
  const name = h.slice(0, Math.max(i, 0)).trim().toLowerCase()
  if (i <= 0 || !TOKEN.test(name)) return false
  const value = h.slice(i + 1).trim()
  const had = headers[name]
  headers[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value]
  return true
}

/** The status line and headers as curl -i prints them. */
function head (statusCode: number, statusText: string, headers: Record<string, string | string[] | undefined>): string {
  let text = `HTTP/1.1 ${statusCode} ${statusText}\r\n`
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) text += `${name}: ${v}\r\n`
  }
  return text + '\r\n'
}

async function requestMain (argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | string[] | undefined>
  let positionals: string[]
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        ...TLS_OPTIONS,
        method: { type: 'string', short: 'X' },
        data: { type: 'string', short: 'd' },
        header: { type: 'string', short: 'H', multiple: true },
        include: { type: 'boolean', short: 'i' },
      },
      allowPositionals: true,
      strict: true,
    }))
  } catch (err) {
    process.stderr.write(`aog-agent request: ${(err as Error).message}\n${REQUEST_USAGE}\n`)
    return 2
  }
  if (values.help === true) { process.stdout.write(REQUEST_USAGE + '\n'); return 0 }
  const usage = (why: string): number => { process.stderr.write(`aog-agent request: ${why}\n${REQUEST_USAGE}\n`); return 2 }
  const missing = missingTls(values)
  if (missing.length > 0) return usage('missing --' + missing.join(', --'))
  if (positionals.length !== 1 || !positionals[0]!.startsWith('/')) return usage('one PATH starting with "/" is required')
  const path = positionals[0]!
  const data = values.data as string | undefined
  const method = (values.method as string | undefined) ?? (data === undefined ? 'GET' : 'POST')
  if (!TOKEN.test(method)) return usage(`bad method: ${method}`)
  const headers: Record<string, string | string[]> = {}
  for (const h of (values.header as string[] | undefined) ?? []) if (!addHeader(headers, h)) return usage(`bad header (want 'Name: value'): ${h}`)
  let agent: AogAgent
  let body: string | Buffer | undefined
  try {
    // @FILE is read whole: a replayable body, so a request refused for want of a grant is sent again.
    body = data?.startsWith('@') === true ? readFileSync(data === '@-' ? 0 : data.slice(1)) : data
    agent = agentOf(values, 1)
  } catch (err) {
    process.stderr.write(`aog-agent request: ${(err as Error).message}\n`)
    return 2
  }
  try {
    const init: FetchInit = { method, headers, ...(body === undefined ? {} : { body }) }
    const res = await agent.fetch(path, init)
    if (values.include === true) process.stdout.write(head(res.statusCode, res.statusText, res.headers))
    for await (const chunk of res.body) {
      if (!process.stdout.write(chunk as Buffer)) await once(process.stdout, 'drain')
    }
    return res.statusCode >= 200 && res.statusCode < 300 ? 0 : 1
  } catch (err) {
    if (err instanceof GateError) {
      process.stderr.write(JSON.stringify(err.problem ?? { status: err.status, code: err.code, detail: err.message }) + '\n')
    } else {
      process.stderr.write(`aog-agent request: ${(err as NodeJS.ErrnoException).code ?? 'ERROR'}: ${(err as Error).message}\n`)
    }
    return 1
  } finally {
    await agent.close()
  }
}

const run = process.argv[2] === 'request' ? requestMain(process.argv.slice(3)) : main()
run.then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`aog-agent: ${String(err)}\n`)
  process.exitCode = 1
})
