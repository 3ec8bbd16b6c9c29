/**
 * The Grafana dashboard (deploy/grafana/aog-dashboard.json) and the alert rules
 * (deploy/prometheus/aog-rules.yml) name only metrics a real gate exposes: a gate with traffic of
 * every kind (passes, refusals, 429s, a refused handshake, a store failure, proxied requests, the
 * CRL) is scraped, and every metric name, and every label its selectors match on, is in the
 * scrape. The dashboard's queries are also valid PromQL (promtool parses them) and the dashboard is
 * importable as Grafana exports dashboards (ids, grid, data source variable).
 */
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { request, Agent } from 'undici'
import { parse } from 'yaml'
import { startGate } from '../helpers/gate.js'
import { startEchoUpstream } from '../helpers/upstream.js'
import { DEV, ROOT, agentFiles } from '../helpers/pki.js'
import { hasTool, missing } from '../helpers/tools.js'
import { failingStore } from '../helpers/failing-store.js'
import { TOTAL_GAUGES } from '../../lib/metrics.js'

const run = promisify(execFile)

interface Panel { id: number, type: string, title: string, gridPos: { h: number, w: number, x: number, y: number }, datasource?: { uid: string }, targets?: Array<{ expr: string, refId: string, datasource?: { uid: string } }> }
interface Dashboard { uid: string, title: string, panels: Panel[], templating: { list: Array<{ name: string, type: string, query: string | { query: string } }> }, schemaVersion: number }

const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'aog-dashboard.json'), 'utf8')) as Dashboard
const rules = parse(readFileSync(join(ROOT, 'deploy', 'prometheus', 'aog-rules.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert?: string, record?: string, expr: string }> }> }

/** Grafana's variables, as a query would be sent: every gate, the rate interval. */
function concrete (expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$job', '.+').replaceAll('$instance', '.+')
}

const dashboardExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => ({ where: `panel "${p.title}" ${x.refId}`, expr: concrete(x.expr) })))
const ruleExprs = rules.groups.flatMap((g) => g.rules).map((r) => ({ where: `rule ${r.alert ?? r.record ?? '?'}`, expr: r.expr }))
const recorded = new Set(rules.groups.flatMap((g) => g.rules).map((r) => r.record).filter((r): r is string => r !== undefined))
// label_values(METRIC{…}, label) of the template variables: METRIC must exist too.
const variableMetrics = dashboard.templating.list.flatMap((v) => {
  const q = typeof v.query === 'string' ? v.query : v.query.query
  const m = /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(q)
  return m === null ? [] : [{ where: `variable $${v.name}`, expr: m[1]! }]
})

/** Prometheus's own series (not the gate's). */
const SYNTHETIC = new Set(['up'])

/**
 * The metric names and the label matchers of a PromQL expression: strings, ranges and grouping
 * clauses removed; an identifier followed by "(" is a function or an aggregation.
 */
export function selectors (expr: string): Array<{ name: string, labels: string[] }> {
  const out: Array<{ name: string, labels: string[] }> = []
  const text = expr
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
  // Selectors with matchers first (the strings inside the braces are the matchers' values).
  const rest = text.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g, (_m, name: string | undefined, body: string) => {
    if (name !== undefined) out.push({ name, labels: [...body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((x) => x[1]!) })
    return ' '
  }).replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ')
  for (const m of rest.matchAll(/(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\s*\(|[\w:])/g)) {
    const name = m[1]!
    if (['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan'].includes(name.toLowerCase())) continue
    out.push({ name, labels: [] })
  }
  return out
}

t.test('the PromQL tokenizer', async (t) => {
  t.same(selectors('sum by (le, route) (rate(aog_x_bucket{job=~".+", route!="upstream"}[5m])) > 0.5 and up == 0'),
    [{ name: 'aog_x_bucket', labels: ['job', 'route'] }, { name: 'up', labels: [] }])
  t.same(selectors('code:aog_refusals:rate5m > 5 * (code:aog_refusals:rate1h offset 5m or code:aog_refusals:rate5m * 0)').map((s) => s.name),
    ['code:aog_refusals:rate5m', 'code:aog_refusals:rate1h', 'code:aog_refusals:rate5m'])
  t.same(selectors('label_replace(rate(a_total{x="1"}[5m]), "code", "$1", "reason", "(.*)") - time()'), [{ name: 'a_total', labels: ['x'] }])
})

t.test('the dashboard is importable: unique ids, panels on the 24-column grid without overlap, queries on the data source variable', async (t) => {
  t.ok(dashboard.uid, 'a uid')
  t.ok(dashboard.schemaVersion >= 36, 'a current schema version')
  t.equal((dashboard as unknown as { id: unknown }).id, null, 'no database id (an export for import)')
  const ids = dashboard.panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  const cells = new Set<string>()
  let overlap = false
  for (const p of dashboard.panels) {
    const g = p.gridPos
    t.ok(g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `panel "${p.title}" fits the grid`)
    for (let x = g.x; x < g.x + g.w; x++) for (let y = g.y; y < g.y + g.h; y++) { const k = `${x},${y}`; if (cells.has(k)) overlap = true; cells.add(k) }
    if (p.type === 'row') continue
    t.ok((p.targets ?? []).length > 0, `panel "${p.title}" has queries`)
    t.equal(p.datasource?.uid, '${datasource}', `panel "${p.title}" uses the data source variable`) // eslint-disable-line no-template-curly-in-string
  }
  t.notOk(overlap, 'no two panels overlap')
  t.ok(dashboard.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'), 'a data source variable (the importer picks the Prometheus)')
  // What the issue asks the dashboard to show.
  const all = dashboardExprs.map((e) => e.expr).join('\n')
  for (const m of ['aog_submissions_total', 'aog_http_request_duration_seconds_bucket', 'aog_verification_duration_seconds_bucket', 'aog_pool_queue_depth', 'aog_pool_utilization',
    'aog_store_errors_total', 'aog_rate_limited_total', 'aog_identity_failures_total', 'aog_connections_dropped_total', 'aog_process_cpu_seconds_total', 'aog_process_resident_memory_bytes',
    'aog_auth_decisions_total', 'aog_grants_issued_total', 'aog_upstream_requests_total', 'aog_upstream_request_duration_seconds_bucket']) {
    t.ok(all.includes(m), `the dashboard shows ${m}`)
  }
})

t.test('the dashboard\'s queries are valid PromQL (promtool parses them)', async (t) => {
  if (!hasTool('promtool')) { t.pass('promtool missing', { skip: missing('promtool', 'prometheus') }); return }
  const dir = mkdtempSync(join(tmpdir(), 'aog-dash-'))
  const file = join(dir, 'dashboard-queries.yml')
  const body = dashboardExprs.map((e, i) => `      - record: aog_dashboard_check:query_${i}\n        expr: ${JSON.stringify(e.expr)}\n`).join('')
  writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${body}`)
  const { stdout } = await run('promtool', ['check', 'rules', file])
  t.match(stdout, new RegExp(`SUCCESS: ${dashboardExprs.length} rules found`), `all ${dashboardExprs.length} queries parse`)
})

t.test('every metric and label the dashboard and the rules use exists in a real gate\'s scrape', async (t) => {
  const echo = await startEchoUpstream(t)
  // A store that fails one GET /challenge on demand: the store-error series.
  const { store, fail } = failingStore()
  const g = await startGate(t, {
    upstream: echo.url,
    assertionKey: join(DEV, 'assertion-key.pem'),
    crl: join(DEV, 'crl.pem'),
    upstreamRateBurst: 3,
    upstreamRatePerSecond: 0.01,
  }, { store })

  // Passes, a proxied request, then the upstream bucket empties: 429s.
  const agent = g.agent()
  t.equal((await agent.fetch('/a')).statusCode, 200, 'a protected request after a pass')
  for (let i = 0; i < 3; i++) await agent.fetch('/b').then((r) => r.body.dump(), () => undefined)
  // Refusals: a bad body, a protected request without a grant, a refused handshake, a store failure.
  t.equal((await g.raw('agent', '/task', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status, 400)
  t.equal((await g.raw('agent2', '/x')).status, 401)
  const rogue = new Agent({ connect: agentFiles('rogue') })
  await request(`${g.url}/challenge`, { dispatcher: rogue }).then(() => t.fail('a rogue certificate passed'), () => t.pass('a rogue certificate is refused at the handshake'))
  await rogue.close()
  fail()
  t.equal((await g.raw('agent', '/challenge')).status, 503, 'the store failed once: 503')
  // The upstream pool is sampled every second; some garbage for the GC histogram.
  let junk = 0
  for (let i = 0; i < 40; i++) junk += new Array(100_000).fill(i).length
  t.ok(junk > 0)
  await new Promise((resolve) => setTimeout(resolve, 1300))

  const text = await (await request(`${g.opsUrl}/metrics`)).body.text()
  const labelsOf = new Map<string, Set<string>>()
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? /.exec(line)
    if (m === null) continue
    const set = labelsOf.get(m[1]!) ?? new Set<string>()
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) set.add(l[1]!)
    labelsOf.set(m[1]!, set)
  }
  let checked = 0
  for (const { where, expr } of [...dashboardExprs, ...ruleExprs, ...variableMetrics]) {
    for (const s of selectors(expr)) {
      if (SYNTHETIC.has(s.name) || recorded.has(s.name)) continue
      checked++
      const labels = labelsOf.get(s.name)
      if (labels === undefined) { t.fail(`${where}: ${s.name} is not in the scrape`, { expr }); continue }
      // job and instance are Prometheus's target labels.
      for (const l of s.labels) if (l !== 'job' && l !== 'instance' && !labels.has(l)) t.fail(`${where}: ${s.name} has no label ${l}`, { expr })
    }
  }
  t.ok(checked > 50, `${checked} metric references checked against the scrape`)
  for (const r of recorded) t.ok(ruleExprs.some((e) => selectors(e.expr).some((s) => s.name === r)), `recording rule ${r} is used`)

  await scrapeChecks(t, text, join(DEV, 'crl.pem'))
})

/** `promtool check metrics` on a scrape: its complaints (stdout and stderr), and its exit code. */
export async function promtoolCheck (text: string): Promise<{ code: number, complaints: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => { out += String(d) })
    child.stderr.on('data', (d) => { out += String(d) })
    child.on('error', reject)
    child.on('close', (code) => { resolve({ code: code ?? -1, complaints: out.trim() }) })
    child.stdin.end(text)
  })
}

/** The value and labels of each sample of `name` in a scrape. */
function samples (text: string, name: string): Array<{ labels: Record<string, string>, value: number }> {
  const out: Array<{ labels: Record<string, string>, value: number }> = []
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    out.push({ labels, value: Number(m[3]) })
  }
  return out
}

/**
 * What an operator alerts on, in a real scrape: promtool finds nothing to say, aog_build_info names
 * this gate, the CRL's nextUpdate is the file's, the store's connection state is one state.
 */
async function scrapeChecks (t: Test, text: string, crlFile: string): Promise<void> {
  if (!hasTool('promtool')) { t.pass('promtool missing', { skip: missing('promtool', 'prometheus') }); return }
  // The check can fail: a gauge named like a counter, as prom-client's defaults had three.
  t.match((await promtoolCheck('# HELP x_total A gauge.\n# TYPE x_total gauge\nx_total 1\n')).complaints, /non-counter metrics should not have "_total" suffix/, 'promtool complains about a _total gauge')
  const lint = await promtoolCheck(text)
  t.equal(lint.complaints, '', 'promtool check metrics: no warning on a real gate\'s scrape')
  t.equal(lint.code, 0, 'promtool check metrics exits 0')
  for (const name of TOTAL_GAUGES) t.notOk(text.includes(`\n${name} `), `${name} (a gauge named like a counter) is not exposed`)
  t.ok(samples(text, 'aog_nodejs_active_handles').length > 0, 'the per-type handle gauges remain (their sum is the removed total)')

  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
  const chain = samples(text, 'aog_chain_implementation_info').filter((s) => s.value === 1).map((s) => s.labels.implementation)
  t.same(samples(text, 'aog_build_info'), [{ labels: { version, node: process.versions.node, chain: chain[0] }, value: 1 }], 'aog_build_info: one series, value 1, this version, Node.js and chain')

  const { stdout } = await run('openssl', ['crl', '-in', crlFile, '-noout', '-nextupdate'])
  const nextUpdate = Date.parse(stdout.replace(/^nextUpdate=/, '').trim()) / 1000
  t.ok(Number.isFinite(nextUpdate) && nextUpdate > 0, `the CRL's nextUpdate (${stdout.trim()})`)
  t.same(samples(text, 'aog_crl_next_update_timestamp_seconds').map((s) => s.value), [nextUpdate], 'aog_crl_next_update_timestamp_seconds is the CRL\'s nextUpdate')

  const states = samples(text, 'aog_store_connection_state')
  t.ok(states.length >= 2, 'aog_store_connection_state has a series per state')
  t.same(states.filter((s) => s.value === 1).map((s) => s.labels.state), ['ready'], 'exactly one state is 1: ready')
}
