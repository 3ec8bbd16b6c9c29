/**
 * lib/host-port.ts: HOST:PORT parsing, and which bound addresses are loopback or private (the
 * start-up warning of forwarded mode over plain HTTP on any other).
 */
import t from 'tap'
import { isLoopbackOrPrivate, parseHostPort } from '../../lib/host-port.js'

t.test('parseHostPort: names, IPv4, bracketed IPv6; anything else throws', async (t) => {
  t.same(parseHostPort('gate.example:8443'), { host: 'gate.example', port: 8443 })
  t.same(parseHostPort('[::1]:80'), { host: '::1', port: 80 })
  for (const bad of ['::1:80', 'host', 'host:65536', 'host:', ':80']) t.throws(() => parseHostPort(bad), bad)
})

t.test('isLoopbackOrPrivate: loopback, RFC 1918, unique local and link-local are; public and unspecified addresses are not', async (t) => {
  for (const a of ['127.0.0.1', '127.8.9.10', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.1.1', '::1', 'fd00::1', 'fe80::1', '::ffff:127.0.0.1', '::FFFF:10.0.0.1']) {
    t.ok(isLoopbackOrPrivate(a), a)
  }
  for (const a of ['0.0.0.0', '::', '8.8.8.8', '172.32.0.1', '172.15.255.255', '192.169.0.1', '2001:db8::1', '::ffff:8.8.8.8', 'localhost', 'gate.example', '']) {
    t.notOk(isLoopbackOrPrivate(a), a)
  }
})
