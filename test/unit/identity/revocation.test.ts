import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Revocation } from '../../../lib/identity/revocation.js'
import { createLogger } from '../../../lib/log.js'
import type { Identity } from '../../../lib/identity/tls.js'

t.test('an identity allowed before a reload is checked again against the new lists', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-revocation-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, '')
  const lines: string[] = []
  const logger = createLogger({ level: 'info', destination: { write: (s: string) => { lines.push(s) } } })
  const revocation = new Revocation({ denyFile: deny, cas: [], logger, pollMs: 0 })
  t.teardown(() => revocation.close())
  const id: Identity = { fingerprint: 'ab'.repeat(32), serial: '1F', subject: 'agent', uri: '', source: 'tls' }
  const other: Identity = { ...id, fingerprint: 'cd'.repeat(32) }
  // The same object, as a kept-alive connection presents it on every request.
  for (let i = 0; i < 3; i++) t.doesNotThrow(() => { revocation.check(id) }, 'allowed')
  writeFileSync(deny, `# revoked today\n${'AB:'.repeat(31)}AB\n`)
  revocation.reload()
  t.throws(() => { revocation.check(id) }, { code: 'AOG_NOT_AUTHORIZED' }, 'denied after the reload, on the same object')
  t.throws(() => { revocation.check(id) }, { code: 'AOG_NOT_AUTHORIZED' }, 'and on every later request')
  t.doesNotThrow(() => { revocation.check(other) }, 'another identity is still allowed')
  t.throws(() => { revocation.check(id) }, { code: 'AOG_NOT_AUTHORIZED' }, 'checking another in between changes nothing')
  writeFileSync(deny, '')
  revocation.reload()
  t.doesNotThrow(() => { revocation.check(id) }, 'allowed again once the deny list drops it')
})

t.test('the identities of one certificate on several connections are one identity to the check', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aog-revocation-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, '')
  const logger = createLogger({ level: 'silent', destination: { write: () => {} } })
  const revocation = new Revocation({ denyFile: deny, cas: [], logger, pollMs: 0 })
  t.teardown(() => revocation.close())
  // Each connection's identity is an object of its own (tls.ts caches per socket), with strings of its own.
  const on = (n: number): Identity => ({ fingerprint: ['ef'.repeat(31), 'ff'].join(''), serial: ['2', 'A'].join(''), subject: `agent ${n}`, uri: '', source: 'tls' })
  const connections = [on(1), on(2), on(3)]
  t.equal(new Set(connections.map((c) => c.fingerprint)).size, 1, 'one fingerprint')
  for (let i = 0; i < 9; i++) t.doesNotThrow(() => { revocation.check(connections[i % 3]!) }, `request ${i} allowed`)
  writeFileSync(deny, `${'ef'.repeat(31)}ff\n`)
  revocation.reload()
  for (const c of connections) t.throws(() => { revocation.check(c) }, { code: 'AOG_NOT_AUTHORIZED' }, 'every connection refused after the reload')
  t.doesNotThrow(() => { revocation.check({ ...connections[0]!, fingerprint: '01'.repeat(32) }) }, 'another certificate is still allowed')
  t.throws(() => { revocation.check(connections[1]!) }, { code: 'AOG_NOT_AUTHORIZED' }, 'and the denied one still refused after it')
})

t.test('deny file formats: 64 hex, colon hex, and the line openssl x509 -fingerprint -sha256 prints', async (t) => {
  const { execFileSync } = await import('node:child_process')
  const { X509Certificate } = await import('node:crypto')
  const { parseDenyList } = await import('../../../lib/identity/revocation.js')
  const { pem, DEV } = await import('../../helpers/pki.js')
  const file = join(DEV, 'agent2.pem')
  const want = new X509Certificate(pem('agent2.pem')).fingerprint256.replace(/:/g, '').toLowerCase()
  // What an operator pastes: openssl's own output line, unedited.
  const line = execFileSync('openssl', ['x509', '-in', file, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim()
  t.match(line, /^sha256 Fingerprint=([0-9A-F]{2}:){31}[0-9A-F]{2}$/i, `openssl prints ${line.slice(0, 30)}…`)
  t.same([...parseDenyList(`${line}\n`)], [want], 'the openssl line is accepted')
  const colon = want.toUpperCase().match(/../g)!.join(':')
  for (const [name, text] of [
    ['SHA256 Fingerprint= (OpenSSL 1.1)', `SHA256 Fingerprint=${colon}`],
    ['colon hex', colon],
    ['64 hex, upper case', want.toUpperCase()],
    ['with a comment and indentation', `  # the agent's old key\n   ${want}  # revoked 2026-12-06\n\n`],
  ] as const) t.same([...parseDenyList(text)], [want], name)
  for (const [name, text] of [
    ['sha1 fingerprint line', `sha1 Fingerprint=${colon.slice(0, 59)}`],
    ['63 hex digits', want.slice(1)],
    ['a stray word', `${want}\nrevoked`],
    ['sha256 Fingerprint= without a value', 'sha256 Fingerprint='],
  ] as const) t.throws(() => parseDenyList(text), /line \d+ is not a SHA-256 fingerprint/, `${name}: refused`)

  // In force through the Revocation (file, reload) with the openssl line.
  const dir = mkdtempSync(join(tmpdir(), 'aog-revocation-'))
  const deny = join(dir, 'deny')
  writeFileSync(deny, `${line}\n`)
  const logger = createLogger({ level: 'silent', destination: { write: () => {} } })
  const revocation = new Revocation({ denyFile: deny, cas: [], logger, pollMs: 0 })
  t.teardown(() => revocation.close())
  t.throws(() => { revocation.check({ fingerprint: want, serial: '01', subject: 'agent2', uri: '', source: 'tls' }) }, { code: 'AOG_NOT_AUTHORIZED' })
})

t.test('a CRL directory: a file written in place (truncated, then written) is read once, whole, never refused half-written', async (t) => {
  const { closeSync, openSync, writeSync } = await import('node:fs')
  const { X509Certificate } = await import('node:crypto')
  const { pem } = await import('../../helpers/pki.js')
  const { buildCrl } = await import('../../helpers/crl.js')
  const { sleep } = await import('../../helpers/outcome.js')
  const dir = mkdtempSync(join(tmpdir(), 'aog-revocation-'))
  const file = join(dir, 'agents.pem')
  writeFileSync(file, buildCrl({ pem: true }))
  const lines: string[] = []
  const logger = createLogger({ level: 'info', destination: { write: (s: string) => { lines.push(s) } } })
  const every = 100
  const revocation = new Revocation({ crlFile: dir, cas: [new X509Certificate(pem('ca.pem'))], logger, pollMs: every })
  t.teardown(() => revocation.close())
  const count = (re: RegExp): number => lines.filter((l) => re.test(l)).length
  for (let i = 1; i <= 5; i++) {
    const fd = openSync(file, 'w')
    // Half a period: the poll in between sees the empty file about half the time.
    await sleep(every / 2)
    writeSync(fd, buildCrl({ pem: true, thisUpdate: new Date(Date.now() - 60_000 + i * 1000), revoked: Array.from({ length: i }, (_, j) => ({ serial: BigInt(j + 1) })) }))
    closeSync(fd)
    await sleep(5 * every)
    t.equal(count(/CRL reloaded/), i, `write ${i}: read once`)
    t.match(lines.filter((l) => /CRL reloaded/.test(l)).at(-1), new RegExp(`"revoked":${i}[,}]`), `write ${i}: read whole`)
  }
  t.equal(count(/refused/), 0, 'never refused half-written')
})
