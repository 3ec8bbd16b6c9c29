/**
 * deploy/compose.yaml: it validates (docker-compose config, the compose-spec schema; podman-compose
 * turns every service into a podman command), its nginx fragment is `aog-server nginx-config` with
 * the arguments it records, and its services' own commands, run outside containers, make the
 * stack of the quick start: the agent passes the gate through nginx (mTLS, forwarded mode), the
 * two gates share one Redis, and the protected echo answers with X-AOG-Agent.
 *
 * Running them outside containers: each service's entrypoint and command (the image's ENTRYPOINT
 * when it has none), its environment (the image's ENV under the service's) and its health check
 * are taken from the files as they are; what a container runtime provides is emulated: every
 * mounted file and secret is copied under a directory of the service's own and its container path
 * rewritten to it, every host:port of a service (its own 0.0.0.0:PORT, another's NAME:PORT, the
 * published localhost:PORT) becomes a free loopback port, aog-server / aog-agent / node are this
 * checkout's dist/bin and node (the image's test runs the image's own). Users, capabilities and
 * read-only roots are not emulated (test/deploy/image.deploy.ts runs the image as its user).
 */
import t from 'tap'
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { parse } from 'yaml'
import { freePort } from '../helpers/redis.js'
import { DEV } from '../helpers/pki.js'
import { NGINX, NJS_MODULE } from '../helpers/nginx.js'
import { certificateFingerprint } from '../../lib/client/agent.js'
import { AGENT, DEPLOY, ROOT, SERVER, exec, jsonLines, needTool, start, waitPort, type Proc } from './helpers.js'

interface Service {
  image?: string
  entrypoint?: string[]
  command?: string[]
  environment?: Record<string, string>
  volumes?: string[]
  secrets?: string[]
  expose?: string[]
  ports?: string[]
  network_mode?: string
  depends_on?: string[] | Record<string, { condition: string }>
  healthcheck?: { test?: string[], disable?: boolean }
}
interface Compose { services: Record<string, Service>, secrets: Record<string, { file: string }>, 'x-nginx-config': string[] }

const COMPOSE = join(DEPLOY, 'compose.yaml')
const MONITORING = join(DEPLOY, 'compose.monitoring.yaml')
const compose = parse(readFileSync(COMPOSE, 'utf8'), { merge: true }) as Compose
const AOG_IMAGE = 'localhost/aog:dev'

/** The image's ENTRYPOINT and ENV, from deploy/Containerfile itself. */
function imageDefaults (): { entrypoint: string[], env: Record<string, string> } {
  const text = readFileSync(join(DEPLOY, 'Containerfile'), 'utf8').replace(/\\\n/g, ' ')
  const runStage = text.slice(text.lastIndexOf('\nFROM '))
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(runStage)![1]!) as string[]
  const env: Record<string, string> = {}
  for (const m of runStage.matchAll(/^ENV (.*)$/gm)) for (const kv of m[1]!.trim().split(/\s+/)) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1)
  return { entrypoint, env }
}

t.test('the compose files validate', async (t) => {
  const names = Object.keys(compose.services)
  t.same(names.sort(), ['agent', 'gate1', 'gate2', 'nginx', 'redis', 'upstream'], 'the stack of the quick start')
  if (needTool(t, 'docker-compose', 'docker-compose')) {
    for (const files of [[COMPOSE], [COMPOSE, MONITORING]]) {
      const r = await exec('docker-compose', [...files.flatMap((f) => ['-f', f]), 'config', '--quiet'], { cwd: DEPLOY })
      t.equal(r.code, 0, `docker-compose config ${files.map((f) => f.slice(DEPLOY.length + 1)).join(' + ')} (the compose-spec schema)`, { stderr: r.stderr })
    }
  }
  if (needTool(t, 'podman-compose', 'podman-compose')) {
    // podman-compose 1.0 has no `config`: its dry run prints the podman command of every service.
    const r = await exec('podman-compose', ['--dry-run', '-f', 'compose.yaml', '-f', 'compose.monitoring.yaml', 'up'], { cwd: DEPLOY })
    t.equal(r.code, 0, 'podman-compose --dry-run up', { stderr: r.stderr.slice(-2000) })
    for (const s of [...names, 'prometheus', 'grafana']) t.match(r.stdout, new RegExp(`podman create --name=deploy_${s}_1 `), `podman-compose: a container for ${s}`)
  }
})

t.test('deploy/compose/aog.conf is aog-server nginx-config with the arguments of x-nginx-config', async (t) => {
  const r = await exec(process.execPath, [SERVER, 'nginx-config', ...compose['x-nginx-config']])
  t.equal(r.code, 0, 'aog-server nginx-config', { stderr: r.stderr })
  const committed = readFileSync(join(DEPLOY, 'compose', 'aog.conf'), 'utf8')
  t.ok(r.stdout === committed, `equal; to regenerate: node dist/bin/aog-server.js nginx-config ${compose['x-nginx-config'].join(' ')} > deploy/compose/aog.conf`)
  t.match(committed, /listen 8443 ssl;/, 'nginx on 8443 with TLS')
  t.match(committed, /ssl_verify_client on;/, 'mTLS')
  t.match(committed, /server gate1:8081 [^;]*;\n\s*server gate2:8081 /, 'the two gates')
  t.match(committed, /auth_request \/_aog\/auth;/, 'the protected application behind auth_request')
})

t.test('the services\' commands, run outside containers: an agent passes the gate through nginx and reaches the echo; two gates share Redis', { timeout: 180_000 }, async (t) => {
  for (const [tool, pkg] of [['redis-server', 'redis-server'], [NGINX, 'nginx libnginx-mod-http-js']] as const) if (!needTool(t, tool, pkg)) return
  const image = imageDefaults()
  const work = mkdtempSync(join(tmpdir(), 'aog-compose-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))

  // Ports: every container port a service listens on, as a free loopback port.
  const port = new Map<string, number>()
  const containerPorts = (s: Service): string[] => [...s.expose ?? [], ...(s.ports ?? []).map((p) => p.split(':').pop()!)]
  for (const [name, s] of Object.entries(compose.services)) for (const p of containerPorts(s)) port.set(`${name}:${p}`, await freePort())
  /** The service publishing host port `hp` (ports: [..., "hp:cp"]) and its container port. */
  const published = (hp: string): number | undefined => {
    for (const [name, s] of Object.entries(compose.services)) {
      for (const p of s.ports ?? []) {
        const parts = p.split(':')
        if (parts[parts.length - 2] === hp) return port.get(`${name}:${parts[parts.length - 1]!}`)
      }
    }
    return undefined
  }

  /** Mounts of a service: container path → the copy under its own directory. */
  const fsRoot = (name: string): string => join(work, name)
  const mounts = (s: Service): Array<[string, string]> => [
    ...(s.volumes ?? []).map((v): [string, string] => { const [src, dst] = v.split(':') as [string, string]; return [resolve(DEPLOY, src), dst] }),
    ...(s.secrets ?? []).map((n): [string, string] => [resolve(DEPLOY, compose.secrets[n]!.file), `/run/secrets/${n}`]),
  ]

  const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  /** Rewrite container paths and host:port of service `name` to this machine's. */
  const mapper = (name: string, s: Service): ((text: string) => string) => {
    const targets = new Set<string>()
    for (const [, dst] of mounts(s)) { targets.add(dst); targets.add(dirname(dst)) }
    const paths = [...targets].sort((a, b) => b.length - a.length)
    const own = containerPorts(s)
    return (text) => {
      // nginx's /tmp first (the copies below live under this machine's /tmp).
      let out = text.replace(/(?<=[\s"])\/tmp\//g, `${fsRoot(name)}/tmp/`)
      if (paths.length > 0) out = out.replace(new RegExp(`(${paths.map(escape).join('|')})(?=[/"';\\s]|$)`, 'g'), (p) => fsRoot(name) + p)
      out = out.replaceAll('/opt/aog/', ROOT)
      for (const [key, p] of port) {
        const [svc, cp] = key.split(':') as [string, string]
        out = out.replace(new RegExp(`(?<![\\w.-])${escape(svc)}:${cp}(?!\\d)`, 'g'), `127.0.0.1:${p}`)
        if (svc === name) out = out.replace(new RegExp(`(?:0\\.0\\.0\\.0|127\\.0\\.0\\.1):${cp}(?!\\d)`, 'g'), `127.0.0.1:${p}`)
      }
      if (s.network_mode === 'host') out = out.replace(/localhost:(\d+)/g, (m, hp: string) => { const p = published(hp); return p === undefined ? m : `localhost:${p}` })
      // nginx: its own listen ports, the njs module where Debian has it, its /tmp.
      out = out.replace(/^(\s*listen )(\d+)(?=[ ;])/gm, (m, l: string, cp: string) => own.includes(cp) ? `${l}127.0.0.1:${port.get(`${name}:${cp}`)!}` : m)
      out = out.replace('load_module modules/ngx_http_js_module.so;', `load_module ${NJS_MODULE};`)
      // A runtime gives a container pipes; node gives a child sockets, which /dev/stdout cannot open.
      out = out.replace('access_log /dev/stdout;', `access_log ${fsRoot(name)}/access.log;`)
      return out
    }
  }

  /** Lay out a service's mounts; returns its argv and environment, mapped. */
  const prepare = (name: string, s: Service): { argv: string[], env: NodeJS.ProcessEnv, map: (x: string) => string } => {
    const map = mapper(name, s)
    mkdirSync(join(fsRoot(name), 'tmp'), { recursive: true })
    for (const [src, dst] of mounts(s)) {
      const to = fsRoot(name) + dst
      mkdirSync(dirname(to), { recursive: true })
      if (/\.conf$/.test(src)) writeFileSync(to, map(readFileSync(src, 'utf8')))
      else { copyFileSync(src, to); chmodSync(to, statSync(src).mode) }
    }
    const isAog = s.image === AOG_IMAGE
    const argv = [...s.entrypoint ?? (isAog ? image.entrypoint : []), ...s.command ?? []].map(map)
    const envIn = { ...(isAog ? image.env : {}), ...s.environment }
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH }
    for (const [k, v] of Object.entries(envIn)) env[k] = containerPorts(s).includes(v) ? String(port.get(`${name}:${v}`)) : v === '0.0.0.0' ? '127.0.0.1' : map(v)
    const bin: Record<string, string[]> = { 'aog-server': [process.execPath, SERVER], 'aog-agent': [process.execPath, AGENT], node: [process.execPath], nginx: [NGINX] }
    const [head, ...rest] = argv
    const cmd = [...bin[head!] ?? [head!], ...rest]
    if (head === 'redis-server') cmd.push('--port', String(port.get(`${name}:6379`)), '--bind', '127.0.0.1')
    return { argv: cmd, env, map }
  }

  // depends_on order; the agent, a one-shot client, last.
  const order: string[] = []
  const visit = (n: string): void => {
    if (order.includes(n)) return
    const d = compose.services[n]!.depends_on
    for (const dep of Array.isArray(d) ? d : Object.keys(d ?? {})) visit(dep)
    order.push(n)
  }
  for (const n of Object.keys(compose.services)) if (n !== 'agent') visit(n)

  const procs = new Map<string, Proc>()
  for (const name of order) {
    const s = compose.services[name]!
    const { argv, env, map } = prepare(name, s)
    const p = start(t, name, argv[0]!, argv.slice(1), { env, cwd: fsRoot(name) })
    procs.set(name, p)
    for (const cp of containerPorts(s)) await waitPort(port.get(`${name}:${cp}`)!).catch((err: Error) => { throw new Error(`${name}: ${err.message}\n${p.lines.join('\n')}`) })
    // Its health check, as compose runs it (CMD-SHELL), where the image is ours.
    const test = s.healthcheck?.test
    if (s.image === AOG_IMAGE && test !== undefined && test[0] === 'CMD-SHELL') {
      const h = await exec('sh', ['-c', map(test[1]!).replace(/(^|\s)node /, `$1${process.execPath} `)], { env })
      t.equal(h.code, 0, `${name}: its health check passes (${test[1]!}) ${h.stderr}`)
    }
  }
  const gates = ['gate1', 'gate2'].map((g) => procs.get(g)!)
  for (const g of gates) t.match(JSON.parse(await g.waitFor(/aog gate listening/)), { mode: 'forwarded', store: 'redis' }, `${g.name}: forwarded mode on Redis`)

  // The agent service, four times: the first passes the gate, the others use the grant it opened,
  // kept in the Redis both gates share.
  const agent = compose.services.agent!
  const fingerprint = certificateFingerprint(readFileSync(join(DEV, 'agent.pem')))
  for (let i = 0; i < 4; i++) {
    const { argv, env } = prepare('agent', agent)
    const r = await exec(argv[0]!, argv.slice(1), { env, cwd: fsRoot('agent') })
    t.equal(r.code, 0, `agent run ${i + 1}: exit 0 ${r.stderr}`)
    t.match(r.stdout, /^HTTP\/1\.1 200 /, `agent run ${i + 1}: 200 from the protected application`)
    const body = JSON.parse(r.stdout.slice(r.stdout.indexOf('\r\n\r\n') + 4)) as { path: string, agent: { claims: Record<string, unknown> } | null }
    t.equal(body.path, '/hello?from=compose', `agent run ${i + 1}: the path it asked for`)
    t.match(body.agent?.claims, { iss: 'aog', sub: fingerprint, htm: 'GET', htu: '/hello?from=compose' }, `agent run ${i + 1}: X-AOG-Agent names the agent and its request`)
  }
  const requests = gates.map((g) => jsonLines(g.lines).filter((l) => l.msg === 'request'))
  const tasks = requests.flat().filter((l) => l.route === '/task' && l.status === 200)
  t.equal(tasks.length, 1, 'one pass in all: the later runs were let through on the grant in the shared Redis')
  for (const [i, r] of requests.entries()) t.ok(r.some((l) => l.route === '/auth' && l.status === 204), `gate${i + 1} authorized requests (nginx spreads them over both)`)

  for (const g of gates) t.same(await g.stop('SIGTERM'), { code: 0, signal: null }, `${g.name}: SIGTERM, exit 0`)
  await procs.get('nginx')!.stop('SIGQUIT')
  t.same(await procs.get('upstream')!.stop('SIGTERM'), { code: 0, signal: null }, 'upstream: SIGTERM, exit 0')
  await procs.get('redis')!.stop('SIGTERM')
})
