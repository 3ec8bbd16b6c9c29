/**
 * The parts of lib/webbotauth/directory.ts that need no network: the `--signature-agents` file and
 * its errors, URL normalization, the cache lifetime of a response, which JWKS members are usable
 * keys, and pinned files (the HTTPS behaviour is test/integration/webbotauth-directory.test.ts).
 */
import t from 'tap'
import { type KeyObject } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  cacheSeconds, createKeyDirectories, describeSkipped, directoryKeys, normalizeDirectoryUrl, parseSignatureAgentsFile, WELL_KNOWN_DIRECTORY,
  type FetchReport, type SkipReason,
} from '../../../lib/webbotauth/directory.js'
import { keyThumbprint } from '../../../lib/webbotauth/httpsig.js'
import { keyPair } from '../../helpers/keys.js'

const dir = mkdtempSync(join(tmpdir(), 'aog-wba-dir-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

function pubJwk (k: KeyObject): Record<string, unknown> {
  const j = k.export({ format: 'jwk' })
  return { kty: j.kty, crv: j.crv, x: j.x }
}
const keyA = keyPair('ed25519').publicKey
const keyB = keyPair('ed25519').publicKey

t.test('normalizeDirectoryUrl: HTTPS only; an origin stands for its well-known directory', async (t) => {
  t.equal(normalizeDirectoryUrl('https://Agent.Example'), `https://agent.example${WELL_KNOWN_DIRECTORY}`)
  t.equal(normalizeDirectoryUrl('https://agent.example/'), `https://agent.example${WELL_KNOWN_DIRECTORY}`)
  t.equal(normalizeDirectoryUrl('https://agent.example:443/keys.json'), 'https://agent.example/keys.json')
  t.equal(normalizeDirectoryUrl('https://agent.example:8443'), `https://agent.example:8443${WELL_KNOWN_DIRECTORY}`)
  t.equal(normalizeDirectoryUrl('https://agent.example/?v=1'), 'https://agent.example/?v=1')
  t.throws(() => normalizeDirectoryUrl('agent.example'), /is not a URL/)
  t.throws(() => normalizeDirectoryUrl('http://agent.example'), /is not an https URL/)
  t.throws(() => normalizeDirectoryUrl('https://u:p@agent.example'), /has credentials/)
  t.throws(() => normalizeDirectoryUrl('https://agent.example/#x'), /has a fragment/)
  t.throws(() => normalizeDirectoryUrl('https://agent.example/#'), /has a fragment/)
})

t.test('parseSignatureAgentsFile: URL or URL FILE per line, comments, errors naming the line', async (t) => {
  const text = [
    '# agents we allow',
    'https://agent.example',
    '',
    '   https://other.example/keys.json   pinned.jwks   # a pinned file',
    'https://abs.example /etc/aog/abs.jwks',
    '\t# indented comment',
  ].join('\r\n')
  t.same(parseSignatureAgentsFile(text, { baseDir: '/etc/aog' }), [
    { url: `https://agent.example${WELL_KNOWN_DIRECTORY}` },
    { url: 'https://other.example/keys.json', file: '/etc/aog/pinned.jwks' },
    { url: `https://abs.example${WELL_KNOWN_DIRECTORY}`, file: '/etc/aog/abs.jwks' },
  ])
  t.same(parseSignatureAgentsFile('https://a.example a.jwks'), [{ url: `https://a.example${WELL_KNOWN_DIRECTORY}`, file: 'a.jwks' }], 'no baseDir: the file as written')
  t.throws(() => parseSignatureAgentsFile('https://a.example\nhttps://b.example x y', { source: 'agents.txt' }), { message: 'agents.txt line 2: expected "URL" or "URL FILE", found 3 fields' })
  t.throws(() => parseSignatureAgentsFile('\n\nhttp://a.example'), { message: 'signature agents file line 3: the directory URL is not an https URL' })
  t.throws(() => parseSignatureAgentsFile('nonsense'), { message: 'signature agents file line 1: the directory URL is not a URL' })
  t.throws(() => parseSignatureAgentsFile('https://a.example/#frag'), { message: 'signature agents file line 1: the directory URL has a fragment' })
  t.throws(() => parseSignatureAgentsFile(`https://a.example\nhttps://A.example${WELL_KNOWN_DIRECTORY}`), { message: `signature agents file line 2: https://a.example${WELL_KNOWN_DIRECTORY} is already allowed on line 1` })
  t.throws(() => parseSignatureAgentsFile('# nothing\n\n'), { message: 'signature agents file: no directory URL' })
})

t.test('cacheSeconds: max-age clamped to [60 s, 1 day], 60 s without one', async (t) => {
  t.equal(cacheSeconds(undefined), 60)
  t.equal(cacheSeconds('public'), 60)
  t.equal(cacheSeconds('max-age=300'), 300)
  t.equal(cacheSeconds('public, MAX-AGE="600"'), 600)
  t.equal(cacheSeconds('max-age=5'), 60)
  t.equal(cacheSeconds('max-age=999999999'), 86_400)
  t.equal(cacheSeconds('max-age=300, no-cache'), 60)
  t.equal(cacheSeconds('no-store'), 60)
  t.equal(cacheSeconds('max-age=-1'), 60)
  t.equal(cacheSeconds('max-age=abc'), 60)
  t.equal(cacheSeconds(['max-age=900', 'max-age=700']), 700, 'the smaller of two')
})

t.test('directoryKeys: Ed25519 public keys by thumbprint; others skipped and counted; none usable is an empty map', async (t) => {
  const skipped = new Map<SkipReason, number>()
  const keys = directoryKeys({
    keys: [
      pubJwk(keyA),
      { ...pubJwk(keyB), kid: 'whatever', alg: 'EdDSA', use: 'sig' },
      { ...pubJwk(keyPair('ed25519').publicKey), d: 'private-part' },
      { ...pubJwk(keyPair('ed25519').publicKey), use: 'enc' },
      { ...pubJwk(keyPair('ed25519').publicKey), alg: 'RS256' },
      { kty: 'OKP', crv: 'Ed25519', x: 'short' },
      { kty: 'OKP', crv: 'X25519', x: pubJwk(keyA).x },
      keyPair('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }),
      'text',
      null,
      [1],
      { kty: 'OKP', crv: 'Ed25519', x: Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]).toString('base64url') },
    ],
  }, undefined, skipped)
  t.same([...keys.keys()].sort(), [keyThumbprint(keyA), keyThumbprint(keyB)].sort())
  t.same(Object.fromEntries(skipped), { 'not an Ed25519 public key': 6, 'private part published': 1, 'not for signatures': 2, 'weak (small order or not canonical)': 1 })
  t.equal(describeSkipped(skipped), '1 private part published, 2 not for signatures, 6 not an Ed25519 public key, 1 weak (small order or not canonical)', 'in the order first seen')
  t.equal(keys.get(keyThumbprint(keyA))!.asymmetricKeyType, 'ed25519')
  // A key held before is reused (its parsed form and its thumbprint are kept).
  const again = directoryKeys({ keys: [pubJwk(keyA)] }, keys)
  t.equal(again.get(keyThumbprint(keyA)), keys.get(keyThumbprint(keyA)))
  t.equal(directoryKeys({ keys: [] }).size, 0)
  const none = new Map<SkipReason, number>()
  t.equal(directoryKeys({ keys: [{ ...pubJwk(keyA), d: 'x' }, { ...pubJwk(keyB), d: 'y' }] }, keys, none).size, 0, 'keys held before are not kept')
  t.equal(describeSkipped(none), '2 private part published')
  t.throws(() => directoryKeys([]), /not a JWKS/)
  t.throws(() => directoryKeys(null), /not a JWKS/)
  t.throws(() => directoryKeys({ keys: {} }), /not a JWKS/)
})

t.test('pinned files: read at creation, never fetched, re-read by refresh(); a broken one keeps the keys', async (t) => {
  const file = join(dir, 'pinned.jwks')
  writeFileSync(file, JSON.stringify({ keys: [pubJwk(keyA)] }))
  const reports: Array<[string, FetchReport]> = []
  let clock = 1_000_000
  const d = createKeyDirectories({ allow: [{ url: 'https://pinned.example', file }], timeoutMs: 1000, maxBytes: 65536, now: () => clock, onFetch: (u, r) => reports.push([u, r]) })
  t.teardown(d.close)
  const url = `https://pinned.example${WELL_KNOWN_DIRECTORY}`
  t.same(d.urls, [url])
  t.equal(await d.resolve('https://pinned.example', keyThumbprint(keyA)), await d.resolve(url, keyThumbprint(keyA)))
  t.equal((await d.resolve('https://pinned.example', keyThumbprint(keyA)) as KeyObject).asymmetricKeyType, 'ed25519')
  t.equal(await d.resolve('https://pinned.example', keyThumbprint(keyB)), undefined)
  clock += 10 * 86_400_000
  t.ok(await d.resolve('https://pinned.example', keyThumbprint(keyA)), 'a pinned file never goes stale')
  t.equal(await d.resolve(undefined, keyThumbprint(keyA)) !== undefined, true, 'found without a Signature-Agent')
  t.equal(await d.resolve('https://other.example', keyThumbprint(keyA)), 'unknown-directory')
  t.equal(await d.resolve('not a url', keyThumbprint(keyA)), 'unknown-directory')
  t.equal(await d.resolve('http://pinned.example', keyThumbprint(keyA)), 'unknown-directory')
  t.same(reports, [[url, { outcome: 'ok', keys: 1, ms: 0 }]], 'read once at creation, no fetch')

  writeFileSync(file, JSON.stringify({ keys: [pubJwk(keyB)] }))
  await d.refresh()
  t.equal(await d.resolve(url, keyThumbprint(keyA)), undefined, 'rotated by refresh()')
  t.ok(await d.resolve(url, keyThumbprint(keyB)))
  t.match(reports.at(-1), [url, { outcome: 'ok', keys: 1 }])
  t.notOk('skipped' in reports.at(-1)![1], 'nothing skipped, no skipped field')
  writeFileSync(file, JSON.stringify({ keys: [pubJwk(keyB), { kty: 'OKP', crv: 'Ed25519', x: Buffer.alloc(32).toString('base64url') }] }))
  await d.refresh()
  t.match(reports.at(-1), [url, { outcome: 'ok', keys: 1, skipped: '1 weak (small order or not canonical)' }], 'a skipped key is reported')
  writeFileSync(file, JSON.stringify({ keys: [] }))
  await d.refresh()
  t.ok(await d.resolve(url, keyThumbprint(keyB)), 'a pinned file without a usable key keeps the keys read before (the operator\'s mistake)')
  t.match(reports.at(-1), [url, { outcome: 'file', detail: /no usable Ed25519 key/ }])
  writeFileSync(file, '{"keys": [')
  await d.refresh()
  t.ok(await d.resolve(url, keyThumbprint(keyB)), 'a file caught mid-write keeps the keys read before')
  t.match(reports.at(-1), [url, { outcome: 'file', detail: /is not JSON/ }])
  rmSync(file)
  await d.refresh()
  t.match(reports.at(-1), [url, { outcome: 'file', detail: /cannot be read \(ENOENT\)/ }])

  t.throws(() => createKeyDirectories({ allow: [{ url: 'https://p.example', file: join(dir, 'missing.jwks') }], timeoutMs: 1000, maxBytes: 1000 }), { message: `signature agent https://p.example${WELL_KNOWN_DIRECTORY}: file ${join(dir, 'missing.jwks')}: cannot be read (ENOENT)` })
  const refused: Array<[string, FetchReport]> = []
  writeFileSync(join(dir, 'good.jwks'), JSON.stringify({ keys: [pubJwk(keyA)] }))
  t.throws(() => createKeyDirectories({ allow: [{ url: 'https://a.example', file: join(dir, 'good.jwks') }, { url: 'https://b.example', file: join(dir, 'missing.jwks') }], timeoutMs: 1000, maxBytes: 1000, onFetch: (u, r) => refused.push([u, r]) }), /b\.example.*ENOENT/)
  t.same(refused, [], 'a list refused at a later file reports nothing loaded')
  writeFileSync(join(dir, 'empty.jwks'), '{"keys": []}')
  t.throws(() => createKeyDirectories({ allow: [{ url: 'https://p.example', file: join(dir, 'empty.jwks') }], timeoutMs: 1000, maxBytes: 1000 }), /file .*empty\.jwks: no usable Ed25519 key$/)
  writeFileSync(join(dir, 'leaked.jwks'), JSON.stringify({ keys: [{ ...pubJwk(keyA), d: 'x' }] }))
  t.throws(() => createKeyDirectories({ allow: [{ url: 'https://p.example', file: join(dir, 'leaked.jwks') }], timeoutMs: 1000, maxBytes: 1000 }), /file .*leaked\.jwks: no usable Ed25519 key \(skipped: 1 private part published\)$/)
  t.throws(() => createKeyDirectories({ allow: [{ url: 'https://p.example' }, { url: `https://p.example${WELL_KNOWN_DIRECTORY}` }], timeoutMs: 1000, maxBytes: 1000 }), /is allowed twice/)
  t.throws(() => createKeyDirectories({ allow: [{ url: 'http://p.example' }], timeoutMs: 1000, maxBytes: 1000 }), /is not an https URL/)
})
