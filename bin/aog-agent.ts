#!/usr/bin/env node
/**
 * aog-agent: fetch, solve, submit. Prints one JSON line per attempt and a summary line; exits 1
 * when any attempt failed, 2 on bad usage.
 */
import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { createAgent, pass, GateError } from '../lib/client/agent.js'

const USAGE = `Usage: aog-agent --url URL --cert FILE --key FILE [--ca FILE] [--count N] [--concurrency C]

  --url URL          the gate, e.g. https://localhost:8443
  --cert FILE        client certificate (PEM)
  --key FILE         client private key (PEM)
  --ca FILE          CA that signed the gate's certificate (PEM)
  --count N          attempts (default 1)
  --concurrency C    attempts in flight at once (default 1)
  --help, -h         print this help

Output: one JSON line per attempt {attempt, status, nonce, runtime_ms, verification | code, detail},
then {summary: true, attempts, passed, failed, elapsed_ms}.`

async function main (): Promise<number> {
  let values: Record<string, string | boolean | undefined>
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        ca: { type: 'string' },
        count: { type: 'string', default: '1' },
        concurrency: { type: 'string', default: '1' },
        help: { type: 'boolean', short: 'h' },
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
  const missing = ['url', 'cert', 'key'].filter((k) => typeof values[k] !== 'string')
  if (missing.length > 0 || !Number.isInteger(count) || count < 1 || !Number.isInteger(concurrency) || concurrency < 1) {
    process.stderr.write(`aog-agent: ${missing.length > 0 ? 'missing --' + missing.join(', --') : '--count and --concurrency must be positive integers'}\n${USAGE}\n`)
    return 2
  }
  let agent
  try {
    agent = createAgent({
      url: values.url as string,
      cert: readFileSync(values.cert as string),
      key: readFileSync(values.key as string),
      ...(typeof values.ca === 'string' ? { ca: readFileSync(values.ca) } : {}),
      connections: concurrency,
    })
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

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`aog-agent: ${String(err)}\n`)
  process.exitCode = 1
})
