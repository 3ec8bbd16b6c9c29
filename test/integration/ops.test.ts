/** The operations listener: /metrics (Prometheus text that counts what happened), /healthz, /readyz. */
import t from 'tap'
import { selectChain } from '../../lib/chain/select.js'
import { chainKernel } from '../../lib/chain/native.js'
import { request } from 'undici'
import { execFileSync } from 'node:child_process'
import parsePrometheus from 'parse-prometheus-text-format'
import { startGate } from '../helpers/gate.js'
import { hasTool, missing } from '../helpers/tools.js'
import { getChallenge, solve, submitTask } from '../../lib/client/agent.js'

type Family = { name: string, type: string, metrics: Array<{ labels?: Record<string, string>, value?: string, count?: string }> }

function sample (families: Family[], name: string, labels: Record<string, string> = {}): number {
  const f = families.find((x) => x.name === name)
  if (f === undefined) return 0
  const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v))
  return m === undefined ? 0 : Number(m.value ?? m.count)
}

t.test('/metrics parses as Prometheus text and counts what happened', async (t) => {
  const g = await startGate(t, { rateBurst: 6, ratePerSecond: 0.01 })
  const agent = g.agent()
  const c1 = await getChallenge(agent)
  const b1 = solve(c1, agent.fingerprint)
  await submitTask(agent, b1) // accepted
  await t.rejects(submitTask(agent, b1)) // 409
  const c2 = await getChallenge(agent)
  await t.rejects(submitTask(agent, { ...solve(c2, agent.fingerprint), trace_hash: '0'.repeat(64) })) // 422 trace
  await g.raw('agent', '/challenge') // the 6th token
  const limited = await g.raw('agent', '/challenge') // 429
  t.equal(limited.status, 429)

  const res = await request(g.opsUrl + '/metrics')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const text = await res.body.text()
  const families = parsePrometheus(text) as Family[]
  t.ok(families.length > 20, 'default process metrics are there too')
  for (const f of families) t.match(f.name, /^aog_/, `${f.name} has the aog_ prefix`)
  t.equal(sample(families, 'aog_challenges_issued_total'), 3)
  t.equal(sample(families, 'aog_submissions_total', { outcome: 'accepted', reason: 'ok' }), 1)
  t.equal(sample(families, 'aog_submissions_total', { outcome: 'rejected', reason: 'AOG_NONCE_CONSUMED' }), 1)
  t.equal(sample(families, 'aog_submissions_total', { outcome: 'rejected', reason: 'AOG_TRACE_MISMATCH' }), 1)
  t.equal(sample(families, 'aog_rate_limited_total', { route: '/challenge', limit: 'rate' }), 1)
  // The parser drops histogram labels, so histogram counts are read from the text itself.
  t.match(text, /^aog_verification_duration_seconds_count\{mode="sampled",result="ok"\} 1$/m)
  t.match(text, /^aog_http_request_duration_seconds_count\{route="\/challenge",method="GET",status="200"\} 3$/m)
  t.match(text, /^aog_http_request_duration_seconds_count\{route="\/task",method="POST",status="409"\} 1$/m)
  t.equal(sample(families, 'aog_chain_implementation_info', { implementation: (await selectChain()).name, kernel: chainKernel((await selectChain()).name) }), 1)
  t.equal(sample(families, 'aog_pool_workers'), 2)
  t.equal(sample(families, 'aog_pool_queue_depth'), 0)
  t.ok(families.some((f) => f.name === 'aog_pool_utilization'))
  t.ok(families.some((f) => f.name === 'aog_identity_failures_total'))
  t.ok(families.some((f) => f.name === 'aog_process_cpu_seconds_total'))

  if (hasTool('promtool')) {
    // promtool exits non-zero on a format error; lint warnings (exit 3 in some versions) are printed.
    const out = execFileSync('sh', ['-c', 'promtool check metrics 2>&1; echo "exit=$?"'], { input: text }).toString()
    t.match(out, /exit=(0|3)$/m, 'promtool accepts the exposition')
    t.notMatch(out, /error/i, 'promtool reports no error')
  } else {
    t.comment(missing('promtool', 'prometheus'))
  }
})

t.test('a refused handshake is counted as an identity failure', async (t) => {
  const g = await startGate(t)
  await t.rejects(getChallenge(g.agent('rogue')))
  await new Promise((resolve) => setTimeout(resolve, 50))
  const text = await (await request(g.opsUrl + '/metrics')).body.text()
  t.match(text, /aog_identity_failures_total\{reason="tls_handshake"\} [1-9]/)
})

t.test('/healthz and /readyz answer; other paths and methods do not', async (t) => {
  const g = await startGate(t)
  const h = await request(g.opsUrl + '/healthz')
  t.equal(h.statusCode, 200)
  t.same(await h.body.json(), { status: 'ok' })
  const r = await request(g.opsUrl + '/readyz')
  t.equal(r.statusCode, 200)
  t.same(await r.body.json(), { status: 'ready' })
  const n = await request(g.opsUrl + '/nope')
  t.equal(n.statusCode, 404)
  await n.body.dump()
  const p = await request(g.opsUrl + '/metrics', { method: 'POST' })
  t.equal(p.statusCode, 405)
  await p.body.dump()
  await g.gate.pool.close()
  const down = await request(g.opsUrl + '/readyz')
  t.equal(down.statusCode, 503)
  t.match(await down.body.json(), { problems: ['verification pool down'] })
})
