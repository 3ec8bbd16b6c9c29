import t from 'tap'
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import RedisMock from 'ioredis-mock'
import { loadScripts, readScript, RedisStore } from '../../lib/stores/redis.js'

const LUA = join(import.meta.dirname, '..', '..', 'lua')

// A scratch lua/ folder with one include; each case writes its own script.
const dir = mkdtempSync(join(tmpdir(), 'aog-lua-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
mkdirSync(join(dir, 'includes'))
writeFileSync(join(dir, 'includes', 'lib.lua'), 'local function one() return 1 end\n')
const read = (body: string): ReturnType<typeof readScript> => {
  writeFileSync(join(dir, 's.lua'), body)
  return readScript(dir, 's.lua')
}

t.test('a script\'s header gives its key count and its includes, prepended in order', async (t) => {
  const s = read('-- s: a test script.\n--- @keys 2\n--- @include "includes/lib"\n-- KEYS[1] a  KEYS[2] b\nreturn one() + #KEYS[2]\n')
  t.equal(s.numberOfKeys, 2)
  t.ok(s.lua.startsWith('local function one() return 1 end\n'), 'the include comes first')
  t.ok(s.lua.endsWith('return one() + #KEYS[2]\n'), 'then the script itself')
  t.equal(read('--- @keys 0\nreturn 1\n').numberOfKeys, 0, 'a script may take no keys')
})

t.test('a malformed header fails loudly at load, naming the script', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['no key count', '-- s\nreturn KEYS[1]\n', /no @keys/],
    ['a key count that is not a number', '--- @keys two\nreturn KEYS[1]\n', /@keys takes a number/],
    ['two key counts', '--- @keys 1\n--- @keys 1\nreturn KEYS[1]\n', /declared twice/],
    ['fewer keys declared than read', '--- @keys 1\nreturn KEYS[2]\n', /@keys 1, but the script reads KEYS\[2\]/],
    ['more keys declared than read', '--- @keys 3\nreturn KEYS[2]\n', /@keys 3, but the script reads KEYS\[2\]/],
    ['a directive after the code starts', '--- @keys 1\nlocal x = KEYS[1]\n--- @include "includes/lib"\nreturn x\n', /line 3: a directive after the header/],
    ['an unknown directive', '--- @keys 1\n--- @numkeys 1\nreturn KEYS[1]\n', /not a directive this loader knows/],
    ['a directive with two dashes', '-- @keys 1\nreturn KEYS[1]\n', /not a directive this loader knows/],
    ['an include without quotes', '--- @keys 1\n--- @include includes/lib\nreturn KEYS[1]\n', /@include takes/],
    ['an include outside includes/', '--- @keys 1\n--- @include "../s"\nreturn KEYS[1]\n', /@include takes/],
    ['a missing include', '--- @keys 1\n--- @include "includes/nope"\nreturn KEYS[1]\n', /includes\/nope\.lua cannot be read/],
    ['the same include twice', '--- @keys 1\n--- @include "includes/lib"\n--- @include "includes/lib"\nreturn KEYS[1]\n', /included twice/],
  ]
  for (const [what, body, error] of cases) t.throws(() => read(body), error, what)
  for (const [what, body] of cases) {
    try { read(body) } catch (err) { t.match((err as Error).message, /^lua\/s\.lua: /, `${what}: the message names the script`) }
  }
})

t.test('an include with directives or keys of its own is refused', async (t) => {
  writeFileSync(join(dir, 'includes', 'bad.lua'), '--- @keys 1\nlocal k = KEYS[1]\n')
  t.throws(() => read('--- @keys 1\n--- @include "includes/bad"\nreturn KEYS[1]\n'), /an include takes no directives/)
  writeFileSync(join(dir, 'includes', 'bad.lua'), 'local k = KEYS[1]\n')
  t.throws(() => read('--- @keys 1\n--- @include "includes/bad"\nreturn KEYS[1]\n'), /an include reads no KEYS/)
})

t.test('every script in lua/ loads, and defineCommand gets the key count its header declares', async (t) => {
  const scripts = loadScripts()
  const files = readdirSync(LUA).filter((f) => f.endsWith('.lua')).sort()
  t.same(files, ['authorize.lua', 'bind.lua', 'consume.lua', 'issue.lua', 'take.lua'], 'the scripts the store calls are the ones in lua/ (includes in lua/includes/)')
  // The header, read here independently of the loader.
  const declared = (file: string): number => Number(/^--- @keys (\d+)$/m.exec(readFileSync(join(LUA, file), 'utf8'))![1])
  const client = new RedisMock() as unknown as Redis
  const defined: Record<string, { numberOfKeys?: number, lua: string }> = {}
  const define = client.defineCommand.bind(client)
  client.defineCommand = (name, def) => { defined[name] = def; define(name, def) }
  const store = new RedisStore({ client })
  t.teardown(() => store.close())
  t.same(Object.keys(defined).sort(), ['aogAuthorize', 'aogBind', 'aogConsume', 'aogIssue', 'aogTake'])
  for (const [name, file] of [['aogIssue', 'issue.lua'], ['aogConsume', 'consume.lua'], ['aogBind', 'bind.lua'], ['aogTake', 'take.lua'], ['aogAuthorize', 'authorize.lua']] as const) {
    t.equal(defined[name]!.numberOfKeys, declared(file), `${name}: ${declared(file)} keys`)
    t.equal(defined[name]!.lua, scripts[name].lua, `${name}: the loaded source`)
    t.equal(defined[name]!.lua.includes('local function take_token('), /^--- @include "includes\/bucket"$/m.test(readFileSync(join(LUA, file), 'utf8')), `${name}: the bucket include exactly where declared`)
  }
})
