/** A real nginx (Debian's, with njs) started by the harness on a free loopback port. */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { renderNginxConfig, type NginxOptions } from '../../lib/nginx-config.js'
import { freePort } from './redis.js'
import { DEV, ROOT } from './pki.js'

const exec = promisify(execFile)
export const NGINX = process.env.AOG_TEST_NGINX ?? '/usr/sbin/nginx'
export const NJS_MODULE = '/usr/lib/nginx/modules/ngx_http_js_module.so'

export interface Nginx {
  port: number
  url: string
  dir: string
  child: ChildProcess
  errors (): string
  stop (): Promise<void>
}

/** The top-level nginx.conf that includes the rendered fragment (what /etc/nginx/nginx.conf does). */
export function mainConfig (dir: string, fragment: string): string {
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d), { recursive: true })
  return `daemon off;
user root;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
load_module ${NJS_MODULE};
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${fragment};
}
`
}

/** `nginx -t` on a main config; resolves with its output, rejects when it fails. */
export async function nginxTest (dir: string, conf: string): Promise<string> {
  const { stderr } = await exec(NGINX, ['-t', '-p', dir, '-c', conf])
  return stderr
}

export interface StartNginxOptions {
  /** The gate's forwarded listener port (one instance). */
  upstreamPort: number
  /** More gate instances' ports, after upstreamPort. */
  morePorts?: number[]
  secretFile: string
  crl?: string
  /** The protected application (--protect), e.g. http://127.0.0.1:PORT. */
  protect?: string
  /** Anything else of the rendered fragment. */
  options?: Partial<NginxOptions>
  /** Rewrite the rendered fragment before nginx reads it (e.g. to run an older configuration). */
  edit?: (fragment: string) => string
}

export async function startNginx (opts: StartNginxOptions): Promise<Nginx> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'aog-nginx-'))
  const fragment = renderNginxConfig({
    listen: `127.0.0.1:${port}`,
    serverName: 'localhost',
    serverCert: join(DEV, 'server.pem'),
    serverKey: join(DEV, 'server-key.pem'),
    clientCa: join(DEV, 'ca.pem'),
    crl: opts.crl ?? join(DEV, 'crl.pem'),
    secretFile: opts.secretFile,
    upstream: [opts.upstreamPort, ...opts.morePorts ?? []].map((p) => `127.0.0.1:${p}`),
    jsPath: join(ROOT, 'nginx'),
    protect: opts.protect,
    ...opts.options,
  })
  writeFileSync(join(dir, 'aog.conf'), opts.edit === undefined ? fragment : opts.edit(fragment))
  writeFileSync(join(dir, 'nginx.conf'), mainConfig(dir, join(dir, 'aog.conf')))
  await nginxTest(dir, join(dir, 'nginx.conf'))
  const child = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' })
  const errors = (): string => { try { return readFileSync(join(dir, 'error.log'), 'utf8') } catch { return '' } }
  const end = Date.now() + 10_000
  while (!errors().includes('start worker process')) {
    if (Date.now() > end || child.exitCode !== null) throw new Error(`nginx did not start: ${errors()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  process.once('exit', () => { try { child.kill('SIGKILL') } catch {} })
  return {
    port,
    url: `https://localhost:${port}`,
    dir,
    child,
    errors,
    async stop () {
      if (child.exitCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGQUIT')
      await exited
    },
  }
}
