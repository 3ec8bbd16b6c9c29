/**
 * Issue 21, defect 7 (the configuration part): an agent that takes longer than the old 5 s keep-alive to
 * solve submits on the very connection it fetched its challenge on, without a TLS EOF.
 */
import t from 'tap'
import { connect, type TLSSocket } from 'node:tls'
import { startGate } from '../helpers/gate.js'
import { agentFiles } from '../helpers/pki.js'
import { createAgent, solve, type ChallengeResponse } from '../../lib/client/agent.js'

/** One HTTP/1.1 exchange on an open socket: the status and the JSON body (Content-Length framed). */
async function exchange (socket: TLSSocket, head: string, body = ''): Promise<{ status: number, json: any, close: boolean }> {
  return await new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    const done = (err?: Error): void => {
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.off('error', onClose)
      if (err !== undefined) reject(err)
    }
    const onClose = (err?: Error): void => { done(err instanceof Error ? err : new Error('the gate closed the connection')) }
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const headers = buf.subarray(0, end).toString('latin1')
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(headers)?.[1] ?? NaN)
      if (buf.length < end + 4 + length) return
      done()
      resolve({
        status: Number(headers.slice(9, 12)),
        json: JSON.parse(buf.subarray(end + 4, end + 4 + length).toString('utf8')),
        close: /\r\nconnection: *close/i.test(headers),
      })
    }
    socket.on('data', onData)
    socket.once('close', onClose)
    socket.once('error', onClose)
    socket.write(head + (body === '' ? '' : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`) + '\r\n' + body)
  })
}

t.test('a solve longer than 5 s is submitted on the connection that fetched the challenge', async (t) => {
  const g = await startGate(t) // keepAliveTimeoutMs not set: derived from the deadline
  t.ok(g.config.keepAliveTimeoutMs > g.config.deadlineMs, `keep-alive ${g.config.keepAliveTimeoutMs} ms outlives the ${g.config.deadlineMs} ms deadline`)
  const files = agentFiles('agent')
  const fingerprint = createAgent({ url: g.url, ...files }).fingerprint
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ...files })
  t.teardown(() => { socket.destroy() })
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve).once('error', reject) })

  const got = await exchange(socket, 'GET /challenge HTTP/1.1\r\nhost: localhost\r\n')
  t.equal(got.status, 200)
  t.notOk(got.close, 'the connection is kept alive')
  const body = solve(got.json as ChallengeResponse, fingerprint)
  // A slow agent: 6.5 s of "solving", past the 5 s keep-alive the gate used to have.
  await new Promise((resolve) => setTimeout(resolve, 6500))
  t.notOk(socket.destroyed, 'the gate kept the idle connection open')
  const sent = await exchange(socket, 'POST /task HTTP/1.1\r\nhost: localhost\r\n', JSON.stringify(body))
  t.equal(sent.status, 200, JSON.stringify(sent.json))
  t.equal(sent.json.status, 'accepted')
})

t.test('an explicit keep-alive is kept as set', async (t) => {
  const g = await startGate(t, { keepAliveTimeoutMs: 1000 })
  t.equal(g.config.keepAliveTimeoutMs, 1000)
  const files = agentFiles('agent')
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(g.url).port), servername: 'localhost', ...files })
  t.teardown(() => { socket.destroy() })
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve).once('error', reject) })
  t.equal((await exchange(socket, 'GET /challenge HTTP/1.1\r\nhost: localhost\r\n')).status, 200)
  const closed = await new Promise<boolean>((resolve) => {
    socket.once('close', () => resolve(true))
    setTimeout(() => resolve(false), 4000).unref()
  })
  t.ok(closed, 'the idle connection is closed after the 1 s set')
})
