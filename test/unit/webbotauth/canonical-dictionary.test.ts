/**
 * The canonical dictionary reader (lib/webbotauth/canonical-dictionary.ts) against structured-headers,
 * the parser of record: whatever it reads, the library reads the same; every canonical text of its
 * subset it reads; anything else it leaves to the library.
 */
import t from 'tap'
import fc from 'fast-check'
import { isDeepStrictEqual } from 'node:util'
import { DisplayString, parseDictionary, serializeDictionary, Token, type BareItem, type Dictionary, type InnerList, type Item, type Parameters } from 'structured-headers'
import { canonicalByteSequence, canonicalDictionary } from '../../../lib/webbotauth/canonical-dictionary.js'
import { signRequest } from '../../../lib/webbotauth/sign.js'
import { keyPair } from '../../helpers/keys.js'

/** Maps as lists of entries, recursively: isDeepStrictEqual ignores a Map's order, which the signature base depends on. */
function ordered (x: unknown): unknown {
  if (x instanceof Map) return [...x].map(([k, v]) => [k, ordered(v)])
  if (Array.isArray(x)) return x.map(ordered)
  return x
}

/** Two readings are the same, in the same order. */
function sameReading (a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(ordered(a), ordered(b))
}

/** The library's reading of `text`, or 'throws'. */
function library (text: string): Dictionary | 'throws' {
  try {
    return parseDictionary(text)
  } catch {
    return 'throws'
  }
}

const key = fc.stringMatching(/^[a-z*][a-z0-9_\-.*]{0,8}$/)
const sfString = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 24 })
const integer = fc.integer({ min: -999_999_999_999_999, max: 999_999_999_999_999 })
const bytes = fc.uint8Array({ maxLength: 70 }).map((u) => new Uint8Array(u).buffer)
const subsetBare: fc.Arbitrary<BareItem> = fc.oneof(sfString, integer, bytes)
// The types it leaves to the library: tokens, decimals, false, dates, display strings.
const otherBare: fc.Arbitrary<BareItem> = fc.oneof(
  fc.stringMatching(/^[a-zA-Z*][a-zA-Z0-9:/!#$%&'*+\-.^_`|~]{0,8}$/).map((s) => new Token(s)),
  fc.integer({ min: -99_999_999, max: 99_999_999 }).map((n) => n / 1000),
  fc.constant(false),
  fc.integer({ min: 0, max: 2_000_000_000 }).map((n) => new Date(n * 1000)),
  fc.string({ maxLength: 8 }).map((s) => new DisplayString(s))
)

function dictionaryOf (bare: fc.Arbitrary<BareItem>): fc.Arbitrary<Dictionary> {
  const params: fc.Arbitrary<Parameters> = fc.array(fc.tuple(key, fc.oneof(bare, fc.constant(true as BareItem))), { maxLength: 4 }).map((kv) => new Map(kv))
  const item: fc.Arbitrary<Item> = fc.tuple(bare, params)
  const innerList: fc.Arbitrary<InnerList> = fc.tuple(fc.array(fc.tuple(sfString as fc.Arbitrary<BareItem>, params), { maxLength: 5 }), params)
  return fc.uniqueArray(fc.tuple(key, fc.oneof(item, innerList)), { selector: (m) => m[0], minLength: 1, maxLength: 4 }).map((members) => new Map(members))
}

t.test('every canonical text of its subset is read, and read as structured-headers reads it', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(dictionaryOf(subsetBare), (dict) => {
    const text = serializeDictionary(dict)
    const fast = canonicalDictionary(text)
    return fast !== undefined && sameReading(fast, library(text)) && serializeDictionary(fast) === text
  }), { numRuns: 3000 }), '3,000 generated dictionaries, each its own serialization')
})

t.test('beyond its subset it reads nothing or what the library reads', async (t) => {
  let read = 0
  let left = 0
  fc.assert(fc.property(dictionaryOf(fc.oneof(subsetBare, otherBare)), (dict) => {
    const text = serializeDictionary(dict)
    const fast = canonicalDictionary(text)
    if (fast === undefined) left++
    else read++
    return fast === undefined || sameReading(fast, library(text))
  }), { numRuns: 3000 })
  t.ok(read > 100 && left > 100, `both kinds were generated (${read} read, ${left} left to the library)`)
})

t.test('mutated texts: whatever it reads, the library reads the same (and does not refuse), and the text is its serialization', async (t) => {
  const alphabet = fc.constantFrom(...'a=()"\\;:, \t-0123456789.?*@%YQ+/'.split(''))
  const edit = fc.tuple(fc.nat(), fc.nat(3), fc.string({ unit: alphabet, maxLength: 3 }))
  let read = 0
  fc.assert(fc.property(dictionaryOf(subsetBare), fc.array(edit, { minLength: 1, maxLength: 3 }), (dict, edits) => {
    let text = serializeDictionary(dict)
    for (const [at, cut, insert] of edits) {
      const i = at % (text.length + 1)
      text = text.slice(0, i) + insert + text.slice(i + cut)
    }
    const fast = canonicalDictionary(text)
    if (fast === undefined) return true
    read++
    return sameReading(fast, library(text)) && serializeDictionary(fast) === text
  }), { numRuns: 20000 })
  t.ok(read > 1000, `mutations it still read were compared (${read})`)
})

t.test('texts the library reads but it leaves to it', async (t) => {
  const cases: Array<[string, string]> = [
    ['a=1,b=2', 'no space after the comma'],
    ['a=1,  b=2', 'two spaces'],
    ['a=1 , b=2', 'a space before the comma'],
    ['a=1,\tb=2', 'a tab'],
    ['a=( "x")', 'a space opening an inner list'],
    ['a=("x"  "y")', 'two spaces in an inner list'],
    ['a=("x" )', 'a space closing an inner list'],
    ['a=1;b', 'a bare true parameter is read'],
    ['a', 'a member that is bare true'],
    ['a=?1', 'a boolean written with ?'],
    ['a=1.0', 'a whole decimal'],
    ['a=1.5', 'a decimal'],
    ['a=007', 'a leading zero'],
    ['a=-0', 'minus zero'],
    ['a=tok', 'a token'],
    ['a=@1', 'a date'],
    ['a=%"x"', 'a display string'],
    ['a=:YR==:', 'base64 with stray bits'],
    ['a=:YQ:', 'base64 without padding'],
    ['a=1;p=1, a=2', 'a repeated member key'],
    ['a=1; b=2', 'a space after a semicolon'],
    ['a=("x";key=tok)', 'a token parameter in an inner list'],
    ['a=1;p=1;p=2', 'a repeated parameter key (the library keeps the last: the text is not its serialization)'],
    ['a=("x";k="1";k="2")', 'a repeated parameter key of an inner list item'],
    ['a=("x");created=1;created=2', 'a repeated parameter key of an inner list'],
  ]
  for (const [text, why] of cases) {
    const lib = library(text)
    if (why === 'a bare true parameter is read') {
      t.ok(sameReading(canonicalDictionary(text), lib), `${why}: ${text}`)
      continue
    }
    t.not(lib, 'throws', `the library reads ${text}`)
    t.equal(canonicalDictionary(text), undefined, `${why}: ${text}`)
  }
  for (const text of ['', 'A=1', 'a=', 'a=1,', 'a=1, ', 'a=("x"', 'a="\\x"', 'a="é"', 'a=1234567890123456', 'a=:Y Q==:', 'a=(1)',
    // Base64 that Buffer's lenient decoder would read: the URL alphabet, padding inside or short, a
    // character outside the alphabet, a line break.
    'a=:YQ-_:', 'a=:Y=Q=:', 'a=:YQ=:', 'a=:YQ*=:', 'a=:YQ\n==:']) {
    t.equal(canonicalDictionary(text), undefined, `refused or left: ${JSON.stringify(text)}`)
  }
  // The empty byte sequence and a 64-byte one are read as the library reads them.
  for (const text of ['a=::', `a=:${Buffer.alloc(64, 0xa5).toString('base64')}:;p=:AQ==:`]) t.ok(sameReading(canonicalDictionary(text), library(text)), text)
})

t.test('the fields a Web Bot Auth signer sends are read, as the library reads them', async (t) => {
  const { privateKey } = keyPair('ed25519')
  const differing: string[] = []
  for (let i = 0; i < 200; i++) {
    const h = signRequest({ method: 'GET', authority: 'gate.example', target: `/challenge?i=${i}` }, { key: privateKey, directoryUrl: 'https://agent.example' })
    for (const text of [h['signature-input'], h.signature, h['signature-agent']!]) {
      const fast = canonicalDictionary(text)
      if (fast === undefined || !sameReading(fast, library(text))) differing.push(text)
    }
  }
  t.same(differing, [], '200 signed requests: each field read as the library reads it')
  // RFC 9421 appendix B.2.6's fields.
  const input = 'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"'
  const signature = 'sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:'
  t.ok(sameReading(canonicalDictionary(input), library(input)))
  t.ok(sameReading(canonicalDictionary(signature), library(signature)))
})

t.test('an inner list\'s items are read once per text: the same reading, shared; a `)` or an escaped quote in a string does not end them', async (t) => {
  const items = '("@method" "@authority" "x)y" "a\\"b)" "signature-agent";key="sig1")'
  const texts = [`sig1=${items};created=1;nonce="a"`, `sig1=${items};created=2;nonce="b"`, `other=${items}, sig1=${items};tag="t"`]
  const read = texts.map((x) => canonicalDictionary(x))
  for (const [i, x] of texts.entries()) t.ok(read[i] !== undefined && sameReading(read[i], library(x)), `read as the library reads it: ${x}`)
  const lists = read.flatMap((d) => [...d!.values()].map((m) => m[0]))
  t.ok(lists.every((l) => l === lists[0]), 'one items array for one items text')
  // A list whose items text was read before, followed by what it must refuse, is still refused.
  t.equal(canonicalDictionary(`sig1=${items};created=01`), undefined, 'a leading zero after a kept list')
  t.equal(canonicalDictionary(`sig1=${items}x`), undefined, 'text after a kept list')
  // Unbalanced: the first `)` outside a string ends the list, and what follows must be parameters.
  t.equal(canonicalDictionary('sig1=("a") "b")'), undefined)
  t.equal(canonicalDictionary('sig1=("a'), undefined)
  // More lists than are kept: each still read as the library reads it.
  for (let i = 0; i < 600; i++) {
    const x = `sig1=("@method" "h${i}");created=${i}`
    if (!sameReading(canonicalDictionary(x), library(x))) t.fail(x)
  }
  t.ok(sameReading(canonicalDictionary(texts[0]!), library(texts[0]!)), 'the first list read again after the kept ones were dropped')
})

/** canonicalByteSequence's reading as the library's type: one member, its bytes, no parameters. */
function asDictionary (read: { key: string, bytes: Buffer }): Dictionary {
  const copy = new Uint8Array(read.bytes.length)
  copy.set(read.bytes)
  return new Map([[read.key, [copy.buffer, new Map()]]])
}

t.test('canonicalByteSequence: every one-member byte-sequence text is read, as the library and canonicalDictionary read it', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(key, bytes, (k, b) => {
    const text = serializeDictionary(new Map([[k, [b, new Map()]]]))
    const read = canonicalByteSequence(text)
    return read !== undefined && sameReading(asDictionary(read), library(text)) && sameReading(asDictionary(read), canonicalDictionary(text))
  }), { numRuns: 3000 }), '3,000 generated fields')
})

t.test('canonicalByteSequence: mutated texts and dictionaries of every kind: whatever it reads, the library reads the same', async (t) => {
  const alphabet = fc.constantFrom(...'a=()"\\;:, \t-0123456789.?*@%YQ+/_'.split(''))
  const edit = fc.tuple(fc.nat(), fc.nat(3), fc.string({ unit: alphabet, maxLength: 3 }))
  const oneMember = fc.tuple(key, bytes).map(([k, b]): Dictionary => new Map([[k, [b, new Map()]]]))
  let read = 0
  let left = 0
  fc.assert(fc.property(fc.oneof(oneMember, dictionaryOf(fc.oneof(subsetBare, otherBare))), fc.array(edit, { maxLength: 3 }), (dict, edits) => {
    let text = serializeDictionary(dict)
    for (const [at, cut, insert] of edits) {
      const i = at % (text.length + 1)
      text = text.slice(0, i) + insert + text.slice(i + cut)
    }
    const r = canonicalByteSequence(text)
    if (r === undefined) {
      left++
      return true
    }
    read++
    return sameReading(asDictionary(r), library(text))
  }), { numRuns: 20000 })
  t.ok(read > 1000 && left > 1000, `both kinds were met (${read} read and compared, ${left} left)`)
})

t.test('canonicalByteSequence leaves to the whole reader what is not exactly one canonical byte sequence', async (t) => {
  const b64 = Buffer.alloc(64, 0xa5).toString('base64')
  const cases: Array<[string, string]> = [
    [`a=:${b64}:, b=:AQ==:`, 'two members'],
    [`a=:${b64}:;p=1`, 'a parameter'],
    [`a=(:${b64}:)`, 'an inner list'],
    [`a=:${b64}: `, 'a trailing space'],
    [` a=:${b64}:`, 'a leading space'],
    ['a=:AQ:', 'no padding'],
    ['a=:AR==:', 'padding bits not zero'],
    ['a=:A-_=:', 'the URL alphabet'],
    ['a=:AQ=A:', 'inner padding'],
    ['a=:AQ\n==:', 'a line break'],
    ['a="AQ=="', 'a string'],
    ['a=:AQ==', 'no closing colon'],
    ['A=:AQ==:', 'an uppercase key'],
    ['a=::AQ==:', 'a colon inside'],
    ['a', 'a bare key'],
    ['', 'empty'],
  ]
  for (const [text, why] of cases) t.equal(canonicalByteSequence(text), undefined, `${why}: ${JSON.stringify(text)}`)
  const sig = canonicalByteSequence(`sig1=:${b64}:`)
  t.same(sig && { key: sig.key, bytes: [...sig.bytes] }, { key: 'sig1', bytes: [...Buffer.alloc(64, 0xa5)] }, 'a Web Bot Auth signature: its label and 64 bytes')
  t.same(canonicalByteSequence('a=::') && [...canonicalByteSequence('a=::')!.bytes], [], 'an empty byte sequence')
})
