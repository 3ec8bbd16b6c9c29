/** A real upstream for protected-request tests: a node:http server that echoes what it got. */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'

export interface Echoed {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  /** sha256 hex and length of the body it received. */
  sha256: string
  bytes: number
}

export interface EchoUpstream {
  url: string
  server: Server
  /** Every request it has answered, in order. */
  seen: Echoed[]
  /** Replace how it answers (default: the Echoed JSON). */
  handler?: ((req: IncomingMessage, res: import('node:http').ServerResponse) => void) | undefined
}

export async function startEchoUpstream (t: Test): Promise<EchoUpstream> {
  const up: EchoUpstream = { url: '', server: undefined as unknown as Server, seen: [] }
  up.server = createServer((req, res) => {
    if (up.handler !== undefined) { up.handler(req, res); return }
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { hash.update(c); bytes += c.length })
    req.on('end', () => {
      const e: Echoed = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, sha256: hash.digest('hex'), bytes }
      up.seen.push(e)
      const text = JSON.stringify(e)
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'echo' }).end(text)
    })
  })
  await new Promise<void>((resolve) => up.server.listen(0, '127.0.0.1', resolve))
  up.url = `http://127.0.0.1:${(up.server.address() as AddressInfo).port}`
  t.teardown(async () => {
    up.server.closeAllConnections()
    await new Promise<void>((resolve) => up.server.close(() => resolve()))
  })
  return up
}
