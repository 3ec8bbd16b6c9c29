import t from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { keepTickShape, keptTickEntry } from '../../lib/tick-shape.js'
import { ROOT } from '../helpers/pki.js'

t.test('keepTickShape keeps a real nextTick queue entry, and only the first', async (t) => {
  t.equal(await keepTickShape(), true, 'this Node hands a nextTick callback its queue entry')
  const kept = keptTickEntry()
  t.ok(kept !== undefined, 'an entry is kept')
  // Node's entry: { [async_id_symbol], [trigger_async_id_symbol], callback, args }.
  const symbols = Object.getOwnPropertySymbols(kept!).map((s) => s.description)
  t.same(symbols, ['async_id_symbol', 'trigger_async_id_symbol'], "the entry's two computed keys")
  t.same(Object.keys(kept!), ['callback', 'args'])
  t.equal(await keepTickShape(), true)
  t.equal(keptTickEntry(), kept, 'a second call keeps the first entry')
})

// The point of keeping an entry: its hidden class, and with it the map transitions every later
// entry follows, survive a full GC with no tick pending (what an idle process gets from V8's
// memory reducer), so nextTick's literal feedback stays monomorphic (lib/tick-shape.ts). V8's
// %HaveSameMap compares hidden classes; it needs --allow-natives-syntax, hence a child process.
t.test('after a full GC with no tick pending, new entries have the kept entry\'s map', async (t) => {
  const module = pathToFileURL(join(ROOT, 'dist', 'lib', 'tick-shape.js')).href
  const code = `
    import { executionAsyncResource } from 'node:async_hooks'
    const { keepTickShape, keptTickEntry } = await import(${JSON.stringify(module)})
    const entry = () => new Promise((resolve) => process.nextTick(() => resolve(executionAsyncResource())))
    const kept = await keepTickShape()
    const before = %HaveSameMap(await entry(), keptTickEntry())
    await new Promise((resolve) => setTimeout(resolve, 10))
    gc(); gc()
    const after = %HaveSameMap(await entry(), keptTickEntry())
    process.stdout.write(JSON.stringify({ kept, before, after }))
  `
  const child = spawn(process.execPath, ['--expose-gc', '--allow-natives-syntax', '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => { out += String(d) })
  child.stderr.on('data', (d) => { err += String(d) })
  const status = await new Promise((resolve) => child.on('close', resolve))
  t.equal(status, 0, err)
  t.same(JSON.parse(out), { kept: true, before: true, after: true })
})
