/**
 * A one-pass reader of a structured dictionary written exactly as RFC 8941 section 4.1 serializes
 * one, for the subset signers of RFC 9421 send: members `key=` an inner list of strings or an
 * item, whose values are strings, integers or byte sequences, with parameters of those types or
 * `true`. Signers serialize their fields this way, and structured-headers reads a character at a
 * time (about 12 µs for a Web Bot Auth `Signature-Input`, the largest cost around the verification:
 * docs/decisions/signature-cost.md).
 *
 * It returns what `parseDictionary` of structured-headers returns for the same text, or undefined
 * for any text it does not recognize whole: other spacing, tokens, decimals, booleans written with
 * `?`, dates, display strings, a repeated member or parameter key, a leading zero, a byte sequence
 * not in canonical base64, an invalid escape. The caller then parses with structured-headers, which
 * stays the parser of record: this reader only accepts texts whose reading the library would give
 * too, and whose serialization is the text itself, so that a caller may use a member's text as its
 * serialization (test/unit/webbotauth/canonical-dictionary.test.ts checks both on generated and
 * mutated texts). Its loops keep the position in locals, written back to `p` when they end: a
 * module variable is a memory access per character. An inner list's items are read once per text
 * (innerList): what it returns may share them with earlier readings, so it must not be changed.
 */
import type { BareItem, Dictionary, InnerList, Item, Parameters } from 'structured-headers'
import { textMemo } from './text-memo.js'

/** Not recognized: the caller parses with structured-headers. */
class NotCanonical {}
const NOT = new NotCanonical()

// The reader's state: one call at a time (synchronous, no callbacks).
let s = ''
let p = 0

function isKeyStart (c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || c === 0x2a
}

function isKeyChar (c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2d || c === 0x2e || c === 0x2a
}

function key (): string {
  const text = s
  const start = p
  if (!isKeyStart(text.charCodeAt(start))) throw NOT
  let i = start + 1
  while (i < text.length && isKeyChar(text.charCodeAt(i))) i++
  p = i
  return text.slice(start, i)
}

/** An sf-string: printable ASCII, `\` only before `"` or `\`. */
function string (): string {
  const text = s
  let i = p + 1 // after the opening quote
  let start = i
  let out = ''
  let escaped = false
  for (;;) {
    if (i >= text.length) throw NOT
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      p = i + 1
      return escaped ? out + text.slice(start, i) : text.slice(start, i)
    }
    if (c === 0x5c) {
      const next = text.charCodeAt(i + 1)
      if (next !== 0x22 && next !== 0x5c) throw NOT
      out += text.slice(start, i)
      escaped = true
      start = i + 1
      i += 2
      continue
    }
    if (c < 0x20 || c > 0x7e) throw NOT
    i++
  }
}

/** An integer as serialized: no leading zero, no `-0`, at most 15 digits, not a decimal. */
function integer (): number {
  const text = s
  const start = p
  let i = start
  if (text.charCodeAt(i) === 0x2d) i++
  const digits = i
  // At most 15 digits, so the value is exact in a double.
  let value = 0
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c < 0x30 || c > 0x39) break
    value = value * 10 + (c - 0x30)
    i++
  }
  const n = i - digits
  if (n === 0 || n > 15 || text.charCodeAt(i) === 0x2e) throw NOT
  if (text.charCodeAt(digits) === 0x30 && (n > 1 || digits > start)) throw NOT
  p = i
  return digits > start ? -value : value
}

/**
 * A byte sequence in canonical base64: padded, and the bits the padding leaves unused zero (RFC 4648
 * section 3.5). Buffer's decoder is lenient (it skips what is not base64, reads the URL alphabet
 * too), so the check is that the bytes encode back to the same text: only canonical base64 does.
 */
function bytes (): ArrayBuffer {
  const end = s.indexOf(':', p + 1)
  if (end < 0) throw NOT
  const text = s.slice(p + 1, end)
  const out = Buffer.from(new ArrayBuffer(Buffer.byteLength(text, 'base64')))
  if (!canonicalBase64(text, out)) throw NOT
  p = end + 1
  return out.buffer
}

/** Decode `text` into `out` (of Buffer.byteLength(text, 'base64') bytes): true when it is canonical base64 (see bytes). */
function canonicalBase64 (text: string, out: Buffer): boolean {
  return out.write(text, 'base64') === out.length && out.toString('base64') === text
}

function bareItem (): BareItem {
  const c = s.charCodeAt(p)
  if (c === 0x22) return string()
  if (c === 0x3a) return bytes()
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return integer()
  throw NOT
}

/**
 * Parameters. A repeated key is left to the library (which keeps the last value): the text would not
 * be the serialization of what is read.
 */
function parameters (): Parameters {
  const params: Parameters = new Map()
  let count = 0
  while (s.charCodeAt(p) === 0x3b) {
    p++
    const k = key()
    if (s.charCodeAt(p) === 0x3d) {
      p++
      params.set(k, bareItem())
    } else {
      params.set(k, true)
    }
    count++
  }
  if (params.size !== count) throw NOT
  return params
}

/**
 * The items of an inner list, by its text from `(` to `)`: an agent's signatures repeat the
 * components they cover, so each list of them is read once (textMemo: 256 kept). A kept list is
 * shared by every reading of its text: never changed. The reader's state is the caller's again
 * when it returns.
 */
const itemsOf = textMemo(256, (text: string): Item[] => {
  const outer = s
  const at = p
  s = text
  p = 0
  try {
    const items = innerItems()
    // The items end at the first `)` outside a string (keys, integers and base64 hold none).
    if (p !== text.length) throw NOT
    return items
  } finally {
    s = outer
    p = at
  }
})

function innerList (): InnerList {
  const close = closingParenthesis()
  const items = itemsOf(s.slice(p, close + 1))
  p = close + 1
  return [items, parameters()]
}

/** Where the inner list opening at `p` closes: its first `)` outside a string. */
function closingParenthesis (): number {
  const text = s
  let inString = false
  for (let i = p + 1; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++
      else if (c === 0x22) inString = false
    } else if (c === 0x22) {
      inString = true
    } else if (c === 0x29) {
      return i
    }
  }
  throw NOT
}

function innerItems (): Item[] {
  p++ // the opening parenthesis
  const items: Item[] = []
  if (s.charCodeAt(p) !== 0x29) {
    for (;;) {
      if (s.charCodeAt(p) !== 0x22) throw NOT
      items.push([string(), parameters()])
      const c = s.charCodeAt(p)
      if (c === 0x29) break
      if (c !== 0x20) throw NOT
      p++
    }
  }
  p++ // the closing parenthesis
  return items
}

/**
 * The one member of a dictionary written exactly `key=:base64:` (a `Signature` field holding one
 * signature, as signers send it), its bytes in canonical base64 as bytes() checks them: the key and
 * the bytes, or undefined for any other text (then parse it whole). Where it reads a text,
 * canonicalDictionary and structured-headers read one member, that key, the same bytes and no
 * parameters; the bytes come as a Buffer, without the ArrayBuffer of its own that the library's
 * type requires (the larger part of reading such a field: docs/decisions/signature-cost.md). The
 * Buffer is a view into Buffer's shared pool: read its bytes, never its `.buffer` (other data).
 */
export function canonicalByteSequence (text: string): { key: string, bytes: Buffer } | undefined {
  s = text
  p = 0
  try {
    const k = key()
    const end = text.length - 1
    if (text.charCodeAt(p) !== 0x3d || text.charCodeAt(p + 1) !== 0x3a || text.indexOf(':', p + 2) !== end) return undefined
    const encoded = text.slice(p + 2, end)
    // A view into Buffer's shared pool (no allocation of its own), every byte written by the decode.
    const bytes = Buffer.allocUnsafe(Buffer.byteLength(encoded, 'base64'))
    return canonicalBase64(encoded, bytes) ? { key: k, bytes } : undefined
  } catch (err) {
    if (err === NOT) return undefined
    throw err
  } finally {
    s = ''
  }
}

/** The dictionary `text` serializes canonically, or undefined (see the module comment). */
export function canonicalDictionary (text: string): Dictionary | undefined {
  s = text
  p = 0
  try {
    const dict: Dictionary = new Map()
    for (;;) {
      const k = key()
      if (dict.has(k) || s.charCodeAt(p) !== 0x3d) return undefined
      p++
      dict.set(k, s.charCodeAt(p) === 0x28 ? innerList() : [bareItem(), parameters()])
      if (p === s.length) return dict
      if (s.charCodeAt(p) !== 0x2c || s.charCodeAt(p + 1) !== 0x20) return undefined
      p += 2
    }
  } catch (err) {
    if (err === NOT) return undefined
    throw err
  } finally {
    s = ''
  }
}
