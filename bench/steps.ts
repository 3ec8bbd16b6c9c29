/**
 * bench:steps — where the gate's CPU per GET /challenge goes, measured rather than counted: the
 * bare baseline server with the gate's work added one step at a time (bench/step-server.ts), then
 * the gate itself, each held at the same fixed request rate (autocannon's overallRate, so that no
 * server is saturated and every one answers the same requests) and charged the CPU its process
 * used (user + system, all threads: garbage collection, compilation, the kernel's share of its
 * system calls). Each round starts every server afresh, in turn; the table gives the median over
 * rounds of CPU microseconds per request, the step's own cost (its median minus the previous
 * step's), and the ratio to the bare server measured in the same run.
 *
 * bench:instructions counts instructions; this adds what they do not show: the cost of memory
 * (records kept for deadline + grace, promoted and marked by the garbage collector) and of the
 * kernel. Differences of a microsecond or two are within this machine's noise: read the steps
 * that stand out.
 *
 * `--rate 0` loads every server as fast as it answers instead (as bench:http does) and adds each
 * one's requests per second and the median of its per-round ratios to the bare server's: what the
 * gate's required work alone costs in throughput, next to what the gate does.
 *   npm run bench:steps [-- --rate 8000 --duration 4 --rounds 5 --connections 16]
 */
import autocannon from 'autocannon'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { DEV, GATE_NODE_ARGS, ROOT, startGateProcess, tracked, type Child } from './servers.js'
import { benchArgs } from './args.js'
import { cpuMs, machine, median, table } from './util.js'

const values = benchArgs('bench:steps', "CPU per GET /challenge on the bare baseline with the gate's work added one step at a time, then on the gate, at a fixed request rate.", {
  rate: { type: 'number', default: 8000, min: 0, help: 'requests per second held on every server; 0 loads each as fast as it answers' },
  duration: { type: 'number', default: 4, help: 'seconds of each round, per server' },
  rounds: { type: 'number', default: 5, help: 'rounds (the median is shown)' },
  connections: { type: 'number', default: 16, help: 'keep-alive connections of the load generator' },
})
const tlsOptions = { cert: readFileSync(join(DEV, 'agent.pem')), key: readFileSync(join(DEV, 'agent-key.pem')), ca: readFileSync(join(DEV, 'ca.pem')) }

const STEPS = [
  'bare node:https (baseline)',
  '+ identity (tlsIdentity)',
  '+ nonce and seed (RandomPool)',
  '+ memory store issue (record kept 70 s)',
  '+ body and RateLimit headers',
  '+ request log line (to /dev/null)',
  '+ request duration histogram',
]

async function startStep (step: number): Promise<Child> {
  const child = tracked(spawn(process.execPath, [...GATE_NODE_ARGS, join(ROOT, 'dist', 'bench', 'step-server.js'), DEV, '--step', String(step)], { stdio: ['ignore', 'pipe', 'inherit'] }))
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (l) => { resolve(Number(l)) })
    child.once('exit', (code) => { reject(new Error(`step ${step} server exited with ${code}`)) })
  })
  return { child, port, stop: () => child.kill('SIGTERM') }
}

const rate = values.rate
const paced = rate > 0 ? { overallRate: rate } : {}

/** CPU microseconds per request of one server, and its requests per second; throws on any failed request. */
async function measure (server: Child, path: string): Promise<{ us: number, rps: number }> {
  const url = `https://localhost:${server.port}${path}`
  const connections = values.connections
  await autocannon({ url, connections, duration: 1, tlsOptions, ...paced } as autocannon.Options) // warm-up
  const c0 = cpuMs(server.child.pid)
  const r = await autocannon({ url, connections, duration: values.duration, tlsOptions, ...paced } as autocannon.Options)
  const c1 = cpuMs(server.child.pid)
  if (r.non2xx > 0 || r.errors > 0 || r.requests.total === 0) throw new Error(`${path}: ${r.non2xx} non-2xx, ${r.errors} errors of ${r.requests.total}`)
  if (c0 === undefined || c1 === undefined) throw new Error('bench:steps reads CPU time from /proc (Linux only)')
  return { us: (c1 - c0) * 1000 / r.requests.total, rps: r.requests.average }
}

async function stopped (server: Child): Promise<void> {
  const exited = new Promise((resolve) => server.child.once('exit', resolve))
  server.stop()
  await exited
}

const names = [...STEPS, 'the gate (aog-server, GET /challenge)']
const samples: number[][] = names.map(() => [])
const rps: number[][] = names.map(() => [])
for (let round = 0; round < values.rounds; round++) {
  for (let i = 0; i < names.length; i++) {
    const server = i < STEPS.length ? await startStep(i) : await startGateProcess()
    const m = await measure(server, i < STEPS.length ? '/' : '/challenge')
    samples[i]!.push(m.us)
    rps[i]!.push(m.rps)
    await stopped(server)
  }
}
const us = samples.map(median)
const load = rate > 0 ? `${rate} req/s fixed` : 'full speed'
console.log(`bench:steps  ${machine()}  ${load}, ${values.connections} keep-alive mTLS connections; ${values.rounds} rounds of ${values.duration} s per server, medians`)
console.log(table(names.map((name, i) => ({
  server: name,
  'CPU us/req': us[i]!.toFixed(1),
  'this step': i === 0 ? '' : i < STEPS.length ? `${us[i]! - us[i - 1]! >= 0 ? '+' : ''}${(us[i]! - us[i - 1]!).toFixed(1)}` : '',
  'vs bare': `${(us[i]! / us[0]!).toFixed(2)}x`,
  rounds: samples[i]!.map((x) => x.toFixed(0)).join(' '),
  ...(rate > 0
    ? {}
    : {
        'req/s': Math.round(median(rps[i]!)).toLocaleString('en'),
        // Each round's requests per second over the bare server's of the same round.
        'req/s vs bare (paired)': `${median(rps[i]!.map((x, r) => x / rps[0]![r]!)).toFixed(2)}x`,
      }),
}))))
process.exit(0)
