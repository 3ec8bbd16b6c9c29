/**
 * deploy/systemd/aog.service: `systemd-analyze verify` passes with nothing to say (against a root
 * holding the package installed as `npm install -g` installs it, so ExecStart exists), the
 * sandboxing scores as `systemd-analyze security --offline` measures it, and the unit's own
 * ExecStart, EnvironmentFile (the example, paths mapped), User (emulated: an unprivileged uid via
 * setpriv), LimitNOFILE (prlimit), ExecReload and KillSignal run a gate that passes an agent,
 * reloads on SIGHUP and stops cleanly. No systemd runs as PID 1 here: the sandbox itself
 * (ProtectSystem=, SystemCallFilter=, …) is not exercised, only analysed.
 */
import t from 'tap'
import { chmodSync, chownSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEV } from '../helpers/pki.js'
import { freePort } from '../helpers/redis.js'
import { AGENT, DEPLOY, ROOT, exec, jsonLines, needTool, start } from './helpers.js'

const UNIT = join(DEPLOY, 'systemd', 'aog.service')
const ENV_EXAMPLE = join(DEPLOY, 'systemd', 'aog.env.example')
const NOBODY = 65534

/** The [Service] section as systemd reads it: key → every value, in order. */
function section (text: string, name: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  let inside = false
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line.startsWith('[')) { inside = line === `[${name}]`; continue }
    if (!inside || line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const i = line.indexOf('=')
    const k = line.slice(0, i)
    out.set(k, [...out.get(k) ?? [], line.slice(i + 1)])
  }
  return out
}

/** An EnvironmentFile as systemd reads it (KEY=VALUE lines; # and ; comments). */
function environmentFile (text: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const i = line.indexOf('=')
    env[line.slice(0, i)] = line.slice(i + 1)
  }
  return env
}

const service = section(readFileSync(UNIT, 'utf8'), 'Service')
const one = (k: string): string | undefined => service.get(k)?.at(-1)

t.test('the unit says what the deployment needs', async (t) => {
  t.match(one('ExecReload'), /^\/bin\/kill -HUP \$MAINPID$/, 'ExecReload: SIGHUP to the main process')
  t.equal(one('Restart'), 'on-failure')
  t.equal(one('RestartPreventExitStatus'), '2', 'a configuration error (exit 2) is not restarted')
  t.ok(one('DynamicUser') === 'yes' || (one('User') !== undefined && one('User') !== 'root'), 'DynamicUser or a dedicated user')
  t.equal(one('ProtectSystem'), 'strict')
  t.equal(one('NoNewPrivileges'), 'yes')
  t.equal(one('CapabilityBoundingSet'), '', 'CapabilityBoundingSet= (empty: no capability)')
  t.match(one('ReadOnlyPaths'), /(^|\s)\/etc\/aog(\s|$)/, 'ReadOnlyPaths for the certificates')
  t.match(one('LimitNOFILE'), /^\d+$/)
  t.equal(one('EnvironmentFile'), '/etc/aog/aog.env')
  t.equal(one('KillSignal'), 'SIGTERM')
  t.notOk(service.has('MemoryDenyWriteExecute'), 'not MemoryDenyWriteExecute (V8 JIT)')
  const env = environmentFile(readFileSync(ENV_EXAMPLE, 'utf8'))
  for (const k of Object.keys(env)) t.match(k, /^AOG_[A-Z0-9_]+$/, `the example sets ${k}, an aog-server variable`)
  const help = await exec(process.execPath, [join(ROOT, 'dist', 'bin', 'aog-server.js'), '--help'])
  for (const k of Object.keys(env)) t.ok(help.stdout.includes(`env ${k}`), `${k} is an option of aog-server --help`)
})

t.test('systemd-analyze verify and security, against the package installed as npm install -g installs it', { timeout: 300_000 }, async (t) => {
  if (!needTool(t, 'systemd-analyze', 'systemd')) return
  const root = mkdtempSync(join(tmpdir(), 'aog-systemd-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  chmodSync(root, 0o755)
  // The package as npm publishes it, installed globally under the root's /usr/local.
  const pack = await exec('npm', ['pack', '--pack-destination', root, '--silent'], { timeoutMs: 240_000 })
  t.equal(pack.code, 0, `npm pack ${pack.stderr.slice(-2000)}`)
  const tgz = join(root, pack.stdout.trim().split('\n').pop()!)
  const install = await exec('npm', ['install', '-g', '--prefix', join(root, 'usr', 'local'), '--prefer-offline', '--no-audit', '--no-fund', '--allow-scripts=aog', tgz], { timeoutMs: 240_000 })
  t.equal(install.code, 0, `npm install -g (${install.ms} ms) ${install.stderr.slice(-2000)}`)
  // What the unit refers to on a Debian host: the unit files of systemd, /bin/kill (merged /usr).
  mkdirSync(join(root, 'usr', 'lib', 'systemd'), { recursive: true })
  cpSync('/usr/lib/systemd/system', join(root, 'usr', 'lib', 'systemd', 'system'), { recursive: true, verbatimSymlinks: true })
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true })
  copyFileSync('/usr/bin/kill', join(root, 'usr', 'bin', 'kill'))
  chmodSync(join(root, 'usr', 'bin', 'kill'), 0o755)
  symlinkSync('usr/bin', join(root, 'bin'))
  mkdirSync(join(root, 'etc', 'systemd', 'system'), { recursive: true })
  const verify = async (text: string): Promise<Awaited<ReturnType<typeof exec>>> => {
    const path = join(root, 'etc', 'systemd', 'system', 'aog.service')
    writeFileSync(path, text)
    return await exec('systemd-analyze', ['verify', `--root=${root}`, path])
  }
  const unit = readFileSync(UNIT, 'utf8')
  const v = await verify(unit)
  t.equal(v.code, 0, 'systemd-analyze verify: exit 0')
  t.equal(v.stderr + v.stdout, '', 'and nothing to say')
  // The check has teeth: a misspelt directive or a missing binary is reported.
  t.match((await verify(unit.replace('ProtectSystem=strict', 'ProtectSystm=strict'))).stderr, /Unknown key 'ProtectSystm'/, 'a misspelt directive is reported')
  t.match((await verify(unit.replace('/usr/local/bin/aog-server', '/usr/local/bin/aog-serve'))).stderr, /is not executable/, 'a missing ExecStart is reported')

  const sec = await exec('systemd-analyze', ['security', '--offline=true', '--threshold=20', UNIT])
  const level = /Overall exposure level for aog\.service: ([\d.]+) (\w+)/.exec(sec.stdout)
  t.ok(level, sec.stdout.slice(-500))
  process.stderr.write(`# systemd-analyze security: exposure ${level?.[1] ?? '?'} ${level?.[2] ?? ''}\n`)
  t.equal(sec.code, 0, `systemd-analyze security --offline: exposure ${level?.[1] ?? '?'} ${level?.[2] ?? ''}, at most 2.0`)

  // The installed ExecStart, as the unit starts it.
  const execStart = one('ExecStart')!
  t.test('ExecStart with the EnvironmentFile example, as an unprivileged user: passes an agent, reloads on ExecReload, stops on KillSignal', { timeout: 120_000 }, async (t) => {
    if (!needTool(t, 'setpriv', 'util-linux') || !needTool(t, 'prlimit', 'util-linux')) return
    // /etc/aog as the example names its files, root:nogroup 0640 (the unit's group reads them).
    const etc = join(root, 'etc', 'aog')
    mkdirSync(etc, { recursive: true })
    const names: Record<string, string> = { 'server.pem': 'server.pem', 'server-key.pem': 'server-key.pem', 'agents-ca.pem': 'ca.pem', 'agents-ca.crl': 'crl.pem', 'assertion-key.pem': 'assertion-key.pem' }
    for (const [to, from] of Object.entries(names)) {
      copyFileSync(join(DEV, from), join(etc, to))
      chownSync(join(etc, to), 0, NOBODY)
      chmodSync(join(etc, to), 0o640)
    }
    const echoPort = await freePort()
    const echo = start(t, 'echo', process.execPath, [join(ROOT, 'docs', 'examples', 'echo-upstream.mjs')], { env: { ...process.env, PORT: String(echoPort) } })
    await echo.waitFor(/listening/)
    const [gatePort, opsPort] = [await freePort(), await freePort()]
    const example = environmentFile(readFileSync(ENV_EXAMPLE, 'utf8'))
    const env: NodeJS.ProcessEnv = { PATH: '/usr/local/bin:/usr/bin:/bin' }
    for (const [k, v] of Object.entries(example)) env[k] = v.replaceAll('/etc/aog/', `${etc}/`)
    Object.assign(env, { AOG_LISTEN: `127.0.0.1:${gatePort}`, AOG_OPS_LISTEN: `127.0.0.1:${opsPort}`, AOG_UPSTREAM: `http://127.0.0.1:${echoPort}`, AOG_ITERATIONS: '65536', AOG_CHECKPOINT_INTERVAL: '1024' })
    // LimitNOFILE as far as this sandbox's hard limit allows; User= as nobody.
    const hard = Number((await exec('sh', ['-c', 'ulimit -Hn'])).stdout.trim())
    const nofile = Math.min(Number(one('LimitNOFILE')), Number.isFinite(hard) ? hard : Infinity)
    // env -u NODE_OPTIONS: tap instruments child processes, which as nobody could not write their reports.
    const argv = ['env', '-u', 'NODE_OPTIONS', 'prlimit', `--nofile=${nofile}:${nofile}`, '--', 'setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs', '--inh-caps=-all', join(root, execStart)]
    const gate = start(t, 'gate', argv[0]!, argv.slice(1), { env })
    const started = JSON.parse(await gate.waitFor(/aog gate listening/)) as Record<string, unknown>
    t.match(started, { mode: 'direct', version: String((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version) }, 'the installed aog-server starts from the EnvironmentFile')
    // The pid env, prlimit, setpriv and the script's own first line exec'd in turn: node itself now.
    const cmdline = readFileSync(`/proc/${gate.child.pid}/cmdline`, 'utf8').split('\0')
    t.ok(cmdline.includes('--no-memory-reducer'), `node runs with --no-memory-reducer (docs/operations.md): ${cmdline.join(' ')}`)
    const request = async (): Promise<Awaited<ReturnType<typeof exec>>> => await exec(process.execPath, [AGENT, 'request', '--url', `https://localhost:${gatePort}`, '--cert', join(DEV, 'agent.pem'), '--key', join(DEV, 'agent-key.pem'), '--ca', join(DEV, 'ca.pem'), '/hello?from=systemd'])
    const r = await request()
    t.equal(r.code, 0, `an agent passes and reaches the upstream ${r.stderr}`)
    t.match(JSON.parse(r.stdout), { path: '/hello?from=systemd', agent: { claims: { htu: '/hello?from=systemd' } } }, 'the echo saw the request with X-AOG-Agent')

    const reload = one('ExecReload')!.replace('$MAINPID', String(gate.child.pid))
    const k = await exec('sh', ['-c', reload.replace(/^\/bin\//, `${root}/bin/`)])
    t.equal(k.code, 0, `ExecReload (${reload})`)
    await gate.waitFor(/SIGHUP: reloading/)
    t.equal((await request()).code, 0, 'still serving after the reload')

    t.same(await gate.stop(one('KillSignal') as NodeJS.Signals), { code: 0, signal: null }, 'KillSignal: a clean exit 0')
    t.ok(jsonLines(gate.lines).some((l) => l.msg === 'shut down cleanly'), 'shut down cleanly')

    const bad = await exec(argv[0]!, argv.slice(1), { env: { ...env, AOG_ITERATIONS: 'many' } })
    t.equal(String(bad.code), one('RestartPreventExitStatus'), `a configuration error exits with RestartPreventExitStatus (not restarted) ${bad.stderr}`)
    await echo.stop()
  })
})
