/**
 * watchFiles calls back once a change has settled: a file written in place (truncated, then
 * written a moment later), a pair written one after the other, a burst of writes or a rename is one
 * call, made after the last write and seeing it; a file that never stops changing is still read;
 * the function it returns stops it.
 */
import t, { type Test } from 'tap'
import { closeSync, mkdtempSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { watchFiles } from '../../lib/watch.js'
import { sleep } from '../helpers/outcome.js'

const EVERY = 100
/** Long enough after a last write for its call to have come (1.5 periods, a poll, margin). */
const SETTLED = 8 * EVERY

function dir (): string { return mkdtempSync(join(tmpdir(), 'aog-watch-')) }

/** Watches files; each call records what they held when it was made. */
function watched (t: Test, files: string[]): { seen: string[], stop: () => void } {
  const out = { seen: [] as string[], stop: () => {} }
  out.stop = watchFiles(files, EVERY, () => { out.seen.push(files.map((f) => readFileSync(f, 'utf8')).join('|')) })
  t.teardown(out.stop)
  return out
}

t.test('a file written in place, truncated then written a moment later: one call, seeing the whole file', async (t) => {
  const f = join(dir(), 'ca.pem')
  writeFileSync(f, 'v0')
  const w = watched(t, [f])
  await sleep(2 * EVERY)
  for (let i = 1; i <= 6; i++) {
    const fd = openSync(f, 'w')
    await sleep(EVERY / 3)
    writeSync(fd, `v${i} whole`)
    closeSync(fd)
    await sleep(SETTLED)
    t.same(w.seen, [`v${i} whole`], `write ${i}: once, whole`)
    w.seen.length = 0
  }
})

t.test('a key then its certificate: one call for the pair, seeing both', async (t) => {
  const d = dir()
  const [key, cert] = [join(d, 'key.pem'), join(d, 'cert.pem')]
  writeFileSync(key, 'k0')
  writeFileSync(cert, 'c0')
  const w = watched(t, [key, cert])
  await sleep(2 * EVERY)
  writeFileSync(key, 'k1')
  await sleep(EVERY / 2)
  writeFileSync(cert, 'c1')
  await sleep(SETTLED)
  t.same(w.seen, ['k1|c1'])
})

t.test('a burst of writes is one call, after the last; a rename is one call; after stop, none', async (t) => {
  const d = dir()
  const f = join(d, 'deny.txt')
  writeFileSync(f, '')
  const w = watched(t, [f])
  await sleep(2 * EVERY)
  for (let i = 1; i <= 6; i++) {
    writeFileSync(f, 'x'.repeat(i))
    await sleep(EVERY / 4)
  }
  await sleep(SETTLED)
  t.same(w.seen, ['xxxxxx'], 'the burst: once, the last content')
  writeFileSync(join(d, 'next'), 'renamed')
  renameSync(join(d, 'next'), f)
  await sleep(SETTLED)
  t.same(w.seen, ['xxxxxx', 'renamed'], 'a rename: once')
  w.stop()
  writeFileSync(f, 'after stop')
  await sleep(SETTLED)
  t.equal(w.seen.length, 2, 'stopped: no call')
})

t.test('a file that never stops changing is still read while it changes', async (t) => {
  const f = join(dir(), 'crl.pem')
  writeFileSync(f, '0')
  const w = watched(t, [f])
  await sleep(2 * EVERY)
  const end = Date.now() + 20 * EVERY
  for (let i = 1; Date.now() < end; i++) {
    writeFileSync(f, String(i))
    await sleep(EVERY / 4)
  }
  t.ok(w.seen.length >= 2, `read ${w.seen.length} times during ${20 * EVERY} ms of writes`)
})
