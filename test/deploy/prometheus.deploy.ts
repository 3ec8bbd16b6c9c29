/**
 * deploy/prometheus and deploy/grafana: the alert rules pass `promtool check rules` and their unit
 * tests (`promtool test rules`), the compose stack's Prometheus configuration passes `promtool check
 * config` (it loads the rules), and Grafana's provisioning files name the dashboard's path.
 * That every metric they use exists in a real gate's scrape: test/integration/metrics-names.test.ts.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { DEPLOY, exec, needTool } from './helpers.js'

const PROM = join(DEPLOY, 'prometheus')

t.test('promtool: the rules check, their unit tests pass, the Prometheus configuration checks', async (t) => {
  if (!needTool(t, 'promtool', 'prometheus')) return
  const check = await exec('promtool', ['check', 'rules', 'aog-rules.yml'], { cwd: PROM })
  t.equal(check.code, 0, `promtool check rules ${check.stdout}${check.stderr}`)
  const rules = parse(readFileSync(join(PROM, 'aog-rules.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert?: string, record?: string }> }> }
  const alerts = rules.groups.flatMap((g) => g.rules).map((r) => r.alert).filter((a): a is string => a !== undefined)
  t.match(check.stdout, new RegExp(`SUCCESS: ${rules.groups.flatMap((g) => g.rules).length} rules found`))
  for (const a of ['AOGGateDown', 'AOGStoreUnavailable', 'AOGVerificationQueueSaturated', 'AOGRefusalSpike', 'AOGCRLNearExpiry', 'AOGHighP99Latency']) t.ok(alerts.includes(a), `alert ${a}`)

  const unit = await exec('promtool', ['test', 'rules', 'aog-rules.test.yml'], { cwd: PROM })
  t.equal(unit.code, 0, `promtool test rules ${unit.stdout}${unit.stderr}`)
  // Every alert has a unit test that expects it to fire.
  const tests = parse(readFileSync(join(PROM, 'aog-rules.test.yml'), 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string, exp_alerts: unknown[] }> }> }
  const fired = new Set(tests.tests.flatMap((x) => x.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname))
  for (const a of alerts) t.ok(fired.has(a), `${a} has a unit test where it fires`)

  const config = await exec('promtool', ['check', 'config', 'prometheus.yml'], { cwd: PROM })
  t.equal(config.code, 0, `promtool check config ${config.stdout}${config.stderr}`)
  const prom = parse(readFileSync(join(PROM, 'prometheus.yml'), 'utf8')) as { scrape_configs: Array<{ job_name: string, static_configs: Array<{ targets: string[] }> }> }
  const job = prom.scrape_configs.find((s) => s.job_name === 'aog')
  t.same(job?.static_configs[0]?.targets, ['gate1:9464', 'gate2:9464'], 'scrapes both gates of the compose stack under job aog (the job the rules match)')
})

t.test('Grafana provisioning: the data source and the dashboard provider', async (t) => {
  const ds = parse(readFileSync(join(DEPLOY, 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')) as { datasources: Array<{ type: string, url: string }> }
  t.match(ds.datasources[0], { type: 'prometheus', url: 'http://prometheus:9090' })
  const dash = parse(readFileSync(join(DEPLOY, 'grafana', 'provisioning', 'dashboards', 'aog.yml'), 'utf8')) as { providers: Array<{ type: string, options: { path: string } }> }
  const monitoring = readFileSync(join(DEPLOY, 'compose.monitoring.yaml'), 'utf8')
  t.ok(monitoring.includes(`./grafana/aog-dashboard.json:${dash.providers[0]!.options.path}/aog-dashboard.json:ro`), 'the provider\'s path is where compose mounts the dashboard')
})
