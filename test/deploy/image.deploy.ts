/**
 * deploy/Containerfile: the image builds (podman, chroot isolation, from a local Node 20 base:
 * these machines reach no container registry), carries what it says (labels, non-root user,
 * entrypoint, health check, production dependencies only, the native chain), and its entrypoint,
 * run from the image's own filesystem (podman image mount + chroot, as the image's user), passes
 * agents and proxies to the echo upstream, also run from the image. `podman run` cannot work here
 * (no CAP_SYS_RESOURCE for the OCI runtime's rlimits, cgroups v1): chroot runs the same files.
 */
import t from 'tap'
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { DEV } from '../helpers/pki.js'
import { freePort } from '../helpers/redis.js'
import { certificateFingerprint } from '../../lib/client/agent.js'
import { AGENT, DEPLOY, ROOT, exec, jsonLines, needTool, start, waitPort } from './helpers.js'

const BASE = process.env.AOG_DEPLOY_BASE ?? 'localhost/aog-base:node20'
const IMAGE = process.env.AOG_DEPLOY_IMAGE ?? 'localhost/aog:deploy-test'
/** The build context: the repository (another tree, e.g. a clean export, with AOG_DEPLOY_CONTEXT). */
const CONTEXT = process.env.AOG_DEPLOY_CONTEXT ?? ROOT
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string, dependencies: Record<string, string>, devDependencies: Record<string, string>, optionalDependencies?: Record<string, string> }

interface ImageConfig {
  User: string
  Entrypoint: string[]
  Env: string[]
  WorkingDir: string
  ExposedPorts: Record<string, unknown>
  Labels: Record<string, string>
  StopSignal?: string
}

if (!needTool(t, 'podman', 'podman') || !needTool(t, 'mmdebstrap', 'mmdebstrap') || !needTool(t, 'unshare', 'util-linux')) {
  // Skipped (loudly) or failed in CI; nothing else to do.
} else {
  let root = ''
  let config: ImageConfig
  let uid = 0
  let gid = 0
  let envOf: Record<string, string> = {}
  let commit = 'unknown'

  t.before(async () => {
    // The base: Debian bookworm minbase + this machine's node (deploy/scripts/local-base.sh),
    // built once per machine (podman keeps it).
    const base = await exec('bash', [join(DEPLOY, 'scripts', 'local-base.sh'), BASE], { timeoutMs: 300_000 })
    if (base.code !== 0) throw new Error(`local-base.sh failed:\n${base.stderr}`)
    process.stderr.write(`# local base image ${BASE}: ${base.ms} ms (${base.stderr.trim().split('\n').pop() ?? ''})\n`)
  })

  t.test('the image builds with podman (chroot isolation) from the local base', { timeout: 600_000 }, async (t) => {
    const revision = await exec('git', ['rev-parse', 'HEAD'], { cwd: CONTEXT })
    commit = revision.code === 0 ? revision.stdout.trim() : 'unknown'
    if (CONTEXT !== ROOT) process.stderr.write(`# build context: ${CONTEXT} (AOG_DEPLOY_CONTEXT)\n`)
    const b = await exec('podman', ['build', '--isolation', 'chroot', '--format', 'docker',
      '--ignorefile', join(CONTEXT, 'deploy', 'Containerfile.dockerignore'),
      '--build-arg', `BASE=${BASE}`,
      '--build-arg', `VERSION=${pkg.version}`,
      '--build-arg', `REVISION=${commit}`,
      '--build-arg', `CREATED=${new Date().toISOString()}`,
      '-f', join(CONTEXT, 'deploy', 'Containerfile'), '-t', IMAGE, CONTEXT], { timeoutMs: 540_000 })
    t.equal(b.code, 0, `podman build (${b.ms} ms)`, { stdout: b.stdout.slice(-4000), stderr: b.stderr.slice(-4000) })
    process.stderr.write(`# podman build: ${b.ms} ms\n`)
  })

  t.test('metadata: OCI labels, a user without privileges, ENTRYPOINT aog-server, HEALTHCHECK on /healthz', async (t) => {
    const ins = await exec('podman', ['image', 'inspect', IMAGE])
    t.equal(ins.code, 0, 'podman image inspect', { stderr: ins.stderr })
    const [image] = JSON.parse(ins.stdout) as Array<{ Config: ImageConfig, Healthcheck?: { Test: string[] } }>
    config = image!.Config
    const labels = config.Labels
    t.equal(labels['org.opencontainers.image.title'], 'aog')
    t.equal(labels['org.opencontainers.image.version'], pkg.version, 'version label = package.json')
    t.equal(labels['org.opencontainers.image.licenses'], 'MIT')
    t.equal(labels['org.opencontainers.image.base.name'], BASE, 'the base is an ARG')
    for (const k of ['description', 'revision', 'created', 'documentation']) t.ok(labels[`org.opencontainers.image.${k}`], `label org.opencontainers.image.${k}`)
    t.equal(labels['org.opencontainers.image.revision'], commit, 'revision: the commit built')
    t.same(config.Entrypoint, ['aog-server'])
    const [u, g] = config.User.split(':').map(Number)
    uid = u!
    gid = g!
    t.ok(uid > 0 && gid > 0, `runs as ${config.User}, not root`)
    t.same(Object.keys(config.ExposedPorts).sort(), ['8443/tcp', '9464/tcp'])
    t.equal(config.StopSignal, 'SIGTERM')
    envOf = Object.fromEntries(config.Env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]))
    t.equal(envOf.AOG_OPS_LISTEN, '0.0.0.0:9464', 'the ops listener reachable from the container network')
    t.equal(envOf.NODE_ENV, 'production')
    // --format docker keeps HEALTHCHECK (OCI images have none).
    const hc = await exec('podman', ['image', 'inspect', '--format', '{{json .Config.Healthcheck}}', IMAGE])
    t.same(JSON.parse(hc.stdout).Test, ['CMD', 'node', '/opt/aog/deploy/healthcheck.mjs'], 'HEALTHCHECK: node calls /healthz')
  })

  t.test('contents: production dependencies only, the native chain, no toolchain, no keys, files read-only to the user', async (t) => {
    const m = await exec('podman', ['image', 'mount', IMAGE])
    t.equal(m.code, 0, 'podman image mount', { stderr: m.stderr })
    root = m.stdout.trim()
    t.teardown(async () => { await exec('podman', ['image', 'unmount', IMAGE]) })
    const app = join(root, 'opt', 'aog')
    const modules = join(app, 'node_modules')
    for (const d of Object.keys(pkg.dependencies)) t.ok(existsSync(join(modules, d, 'package.json')), `dependency ${d}`)
    for (const d of Object.keys(pkg.optionalDependencies ?? {})) t.ok(existsSync(join(modules, d, 'package.json')), `optional dependency ${d}`)
    t.same(readdirSync(join(modules, 'sodium-native', 'prebuilds')), [`linux-${process.arch}`], 'sodium-native keeps the binary of the image\'s platform only')
    for (const d of Object.keys(pkg.devDependencies)) t.notOk(existsSync(join(modules, d)), `no devDependency ${d}`)
    t.notOk(readdirSync(modules).some((d) => d.startsWith('@') && readdirSync(join(modules, d)).length === 0), 'no empty scope directories left by the prune')
    t.ok(existsSync(join(app, 'lib', 'native', 'build', 'Release', 'aog_chain.node')), 'the native chain')
    for (const f of ['dist/bin/aog-server.js', 'dist/bin/aog-agent.js', 'lua/authorize.lua', 'nginx/aog-sign.js', 'certs/gen.sh', 'docs/examples/echo-upstream.mjs', 'deploy/healthcheck.mjs', 'package.json']) {
      t.ok(existsSync(join(app, f)), f)
    }
    t.notOk(existsSync(join(app, 'lib', 'openapi.ts')), 'no TypeScript sources')
    t.notOk(existsSync(join(app, 'test')), 'no tests')
    for (const tool of ['usr/bin/g++', 'usr/bin/gcc', 'usr/bin/make', 'usr/bin/python3']) t.notOk(existsSync(join(root, tool)), `no ${tool} in the run stage`)
    t.notOk(existsSync(join(root, 'src')), 'no build directory')
    // Nothing under /opt/aog belongs to the user or is writable by it; no private key anywhere.
    const bad: string[] = []
    const keys: string[] = []
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name)
        if (e.isSymbolicLink()) continue
        const s = statSync(p)
        if (s.uid === uid || (s.mode & 0o002) !== 0) bad.push(p)
        if (/-key\.pem$|forward-secret$/.test(e.name)) keys.push(p)
        if (e.isDirectory()) walk(p)
      }
    }
    walk(app)
    t.same(bad, [], 'no file of the app owned by or writable for the run user')
    t.same(keys, [], 'no key or secret in the image')
    // Each aog service of the compose file runs something the image has.
    const compose = parse(readFileSync(join(DEPLOY, 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, { image?: string, entrypoint?: string[] }> }
    for (const [name, s] of Object.entries(compose.services)) {
      if (s.image !== 'localhost/aog:dev') continue
      const argv = s.entrypoint ?? config.Entrypoint
      // Inside the image: an absolute symbolic link points into the image, not the host.
      const inside = (p: string): boolean => {
        const l = lstatSync(p, { throwIfNoEntry: false })
        if (l === undefined) return false
        if (!l.isSymbolicLink()) return true
        const target = readlinkSync(p)
        return existsSync(target.startsWith('/') ? join(root, target) : join(p, '..', target))
      }
      const bin = ['usr/local/bin', 'usr/bin'].map((d) => join(root, d, argv[0]!)).find(inside)
      t.ok(bin, `compose service ${name}: ${argv[0]!} is in the image`)
      for (const a of argv.slice(1)) if (a.startsWith('/opt/aog/')) t.ok(existsSync(join(root, a)), `compose service ${name}: ${a} is in the image`)
    }
  })

  t.test('the entrypoint, run from the image as its user, passes agents and proxies to the echo upstream (also run from the image)', { timeout: 120_000 }, async (t) => {
    const m = await exec('podman', ['image', 'mount', IMAGE])
    root = m.stdout.trim()
    t.teardown(async () => { await exec('podman', ['image', 'unmount', IMAGE]) })
    // What the compose file mounts: certificates in /etc/aog, keys in /run/secrets, readable by the
    // image's user (bind mounts keep owner and mode: the user must own them).
    const files = mkdtempSync(join(tmpdir(), 'aog-image-'))
    t.teardown(() => rmSync(files, { recursive: true, force: true }))
    for (const f of ['server.pem', 'server-key.pem', 'ca.pem', 'crl.pem', 'assertion-key.pem', 'agent.pem', 'agent-key.pem']) {
      copyFileSync(join(DEV, f), join(files, f))
      chownSync(join(files, f), uid, gid)
    }
    chownSync(files, uid, gid)
    chmodSync(files, 0o700)

    /** argv run in the image: its user, its environment (plus `env`), its working directory, /proc, /dev, the mounts. */
    const inImage = (env: Record<string, string>, argv: string[]): [string, string[]] => {
      const mounts = [
        'mount -t proc proc "$R/proc"',
        'mount --rbind /dev "$R/dev"',
        // What a runtime provides: /etc/hosts (the image has an empty one to mount over).
        'mount --bind -o ro /etc/hosts "$R/etc/hosts"',
        'mount -t tmpfs -o mode=755 tmpfs "$R/run"',
        'mkdir -p "$R/run/secrets"',
        'mount --bind -o ro "$F" "$R/etc/aog"',
        'mount --bind -o ro "$F" "$R/run/secrets"',
      ].join(' && ')
      const vars = Object.entries({ ...envOf, ...env }).map(([k, v]) => `${k}=${v}`)
      const script = `${mounts} && cd / && exec chroot --userspec=${uid}:${gid} "$R" /usr/bin/env -i ${vars.map((v) => `'${v.replace(/'/g, "'\\''")}'`).join(' ')} /bin/sh -c 'cd ${config.WorkingDir} && exec "$@"' sh "$@"`
      return ['unshare', ['--mount', '--propagation', 'private', '--', 'env', `R=${root}`, `F=${files}`, 'sh', '-c', script, 'sh', ...argv]]
    }

    const [gatePort, opsPort, echoPort] = [await freePort(), await freePort(), await freePort()]
    const echo = start(t, 'echo', ...inImage({ HOST: '127.0.0.1', PORT: String(echoPort) }, ['node', '/opt/aog/docs/examples/echo-upstream.mjs']))
    await echo.waitFor(/echo upstream listening/)
    const gateEnv = {
      AOG_LISTEN: `127.0.0.1:${gatePort}`,
      AOG_OPS_LISTEN: `127.0.0.1:${opsPort}`,
      AOG_TLS_CERT: '/etc/aog/server.pem',
      AOG_TLS_KEY: '/run/secrets/server-key.pem',
      AOG_CLIENT_CA: '/etc/aog/ca.pem',
      AOG_CRL: '/etc/aog/crl.pem',
      AOG_UPSTREAM: `http://127.0.0.1:${echoPort}`,
      AOG_ASSERTION_KEY: '/run/secrets/assertion-key.pem',
      AOG_ITERATIONS: '65536',
      AOG_CHECKPOINT_INTERVAL: '1024',
      AOG_MIN_NS_PER_ITERATION: '0',
    }
    const gate = start(t, 'gate', ...inImage(gateEnv, config.Entrypoint))
    const started = JSON.parse(await gate.waitFor(/aog gate listening/)) as Record<string, unknown>
    t.match(started, { mode: 'direct', chain: 'native', version: pkg.version }, 'the image\'s gate starts with the native chain it built')
    // unshare, sh, chroot, env, sh and the entrypoint's first line exec'd in turn: node itself now.
    const cmdline = readFileSync(`/proc/${gate.child.pid}/cmdline`, 'utf8').split('\0')
    t.ok(cmdline.includes('--no-memory-reducer'), `the entrypoint runs node with --no-memory-reducer (docs/operations.md): ${cmdline.join(' ')}`)
    await waitPort(opsPort)

    const verifier = await exec(...inImage({}, ['node', '-e', "import('/opt/aog/dist/lib/webbotauth/ed25519.js').then((m) => console.log(m.ed25519VerifierChoice().verifier.name))"]))
    t.equal(verifier.stdout.trim(), 'libsodium', `Web Bot Auth verifies with libsodium in the image ${verifier.stderr}`)

    const version = await exec(...inImage({}, [...config.Entrypoint, '--version']))
    t.equal(version.stdout.trim(), pkg.version, 'aog-server --version in the image')

    const health = await exec(...inImage(gateEnv, ['node', '/opt/aog/deploy/healthcheck.mjs']))
    t.equal(health.code, 0, `the HEALTHCHECK command succeeds against the running gate ${health.stderr}`)

    const pass = await exec(process.execPath, [AGENT, '--url', `https://localhost:${gatePort}`, '--cert', join(DEV, 'agent.pem'), '--key', join(DEV, 'agent-key.pem'), '--ca', join(DEV, 'ca.pem'), '--count', '3', '--concurrency', '2'])
    t.equal(pass.code, 0, pass.stderr)
    t.match(pass.stdout, /"summary":true,"attempts":3,"passed":3,"failed":0/, 'the host\'s agent CLI passes the image\'s gate 3 times')

    const req = await exec(...inImage({}, ['aog-agent', 'request', '--url', `https://localhost:${gatePort}`, '--cert', '/etc/aog/agent2.pem', '--key', '/run/secrets/agent2-key.pem', '--ca', '/etc/aog/ca.pem', '-i', '/hello?from=image']))
    // agent2 has no files in the mounts: its request must fail cleanly (exit 2, a bad path).
    t.equal(req.code, 2, 'a missing key file: exit 2')
    const ok = await exec(...inImage({}, ['aog-agent', 'request', '--url', `https://localhost:${gatePort}`, '--cert', '/etc/aog/agent.pem', '--key', '/run/secrets/agent-key.pem', '--ca', '/etc/aog/ca.pem', '-i', '/hello?from=image']))
    t.equal(ok.code, 0, `the image's aog-agent request exits 0 ${ok.stderr}`)
    t.match(ok.stdout, /^HTTP\/1\.1 200 /, 'the echo answered through the gate')
    const body = JSON.parse(ok.stdout.slice(ok.stdout.indexOf('\r\n\r\n') + 4)) as { path: string, agent: { claims: Record<string, unknown> } }
    t.equal(body.path, '/hello?from=image', 'the path it asked for')
    t.match(body.agent.claims, { iss: 'aog', sub: certificateFingerprint(readFileSync(join(DEV, 'agent.pem'))), htm: 'GET', htu: '/hello?from=image' }, 'X-AOG-Agent names the agent and the request')

    // Log lines are buffered (flushed every 200 ms and at exit): wait for it.
    await gate.waitFor(/"route":"upstream".*"status":200/, 5000).catch(() => undefined)
    const requests = jsonLines(gate.lines).filter((l) => l.msg === 'request')
    t.ok(requests.some((l) => l.route === 'upstream' && l.status === 200), 'the gate logged the proxied request')

    const stopped = await gate.stop('SIGTERM')
    t.same(stopped, { code: 0, signal: null }, 'SIGTERM: exit 0')
    t.ok(jsonLines(gate.lines).some((l) => l.msg === 'shut down cleanly'), 'a clean shutdown')
    const after = await exec(...inImage(gateEnv, ['node', '/opt/aog/deploy/healthcheck.mjs']))
    t.equal(after.code, 1, 'the HEALTHCHECK command fails once the gate is gone')
    t.same(await echo.stop('SIGTERM'), { code: 0, signal: null }, 'the echo upstream stops cleanly')
  })
}
