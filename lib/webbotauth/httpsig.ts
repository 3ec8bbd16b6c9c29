/**
 * Web Bot Auth identity (docs/protocol.md section 8): the verifier of HTTP Message Signatures
 * (RFC 9421) as draft-ietf-webbotauth-httpsig-protocol profiles them.
 *
 * `Signature-Input`, `Signature` and `Signature-Agent` are structured fields (RFC 8941), parsed with
 * `structured-headers`, each bounded to MAX_FIELD_LENGTH characters before it is parsed; a field
 * written exactly as RFC 8941 serializes it, as signers send it, is read in one pass instead
 * (canonical-dictionary.ts: the same result, a fifth of the time), and a `Signature` holding just
 * the one signature straight into its bytes (canonicalByteSequence). A label, or a parameter key
 * of one item, repeated within a field is refused (RFC 8941 would keep the last one silently, where
 * another reader of the same message could take the first). `Signature-Agent` is accepted in the draft's
 * dictionary form (`sig1="https://agent.example"`, covered as `"signature-agent";key="sig1"`) and in
 * the older bare-string form (`"https://agent.example"`, covered as `"signature-agent"`).
 *
 * The signature base is built as RFC 9421 section 2.5 says: one line per covered component,
 * `"<identifier>": <value>`, then `"@signature-params": <the serialized inner list>`, joined by LF
 * with no trailing LF. The signature parameters are the canonical serialization of the parsed
 * inner list, as the RFC defines: serialized from it, or, when the field was read by the canonical
 * reader and holds one signature, the field's text after the label, which is that serialization
 * (canonical-dictionary.ts reads only texts that are their own serialization).
 *
 * verifyRequest performs the checks of section 8 in order and refuses with 401
 * AOG_SIGNATURE_INVALID, whose detail names the check, and `Accept-Signature` (RFC 9421 section 5.1);
 * a directory whose keys are unknown is 503 AOG_UNAVAILABLE with Retry-After (fail closed). The single use of
 * the nonce and the deny list are the caller's: it gets the nonce, `expires` and the thumbprint.
 */
import type { KeyObject } from 'node:crypto'
import { isInnerList, parseDictionary, parseItem, serializeDictionary, serializeInnerList, serializeItem, serializeParameters, Token, type BareItem, type Dictionary, type InnerList, type Item, type Parameters } from 'structured-headers'
import { AogError } from '../errors.js'
import { jwkThumbprint, publicJwk } from '../keys.js'
import { canonicalByteSequence, canonicalDictionary } from './canonical-dictionary.js'
import { verifyInBatch } from './verify-batch.js'
import { textMemo } from './text-memo.js'

/** The `tag` of a Web Bot Auth signature. */
export const WEB_BOT_AUTH_TAG = 'web-bot-auth'

/** Longest `Signature-Input`, `Signature` or `Signature-Agent` value parsed (characters). */
export const MAX_FIELD_LENGTH = 8192

/** Most components one signature may cover. */
export const MAX_COVERED_COMPONENTS = 32

/** Longest nonce accepted (characters): the caller stores it until `expires` and the skew have passed. */
export const MAX_NONCE_LENGTH = 256

/** Components every signature must cover (`@target-uri` may stand for `@authority`). */
export const REQUIRED_COMPONENTS = ['@method', '@authority', '@path'] as const

/**
 * The `Accept-Signature` value of every refusal (RFC 9421 section 5.1): the components to cover,
 * `created`, `expires` and `nonce` to be included (a parameter without a value asks the signer for
 * one of its own, as the RFC defines for `created` and `expires`), the algorithm and the tag. A
 * request that sends `Signature-Agent` must cover it too (section 8).
 */
export const ACCEPT_SIGNATURE = serializeDictionary(new Map([[
  'sig1',
  [REQUIRED_COMPONENTS.map((c): Item => [c, new Map()]), new Map<string, BareItem>([
    ['created', true], ['expires', true], ['nonce', true], ['alg', 'ed25519'], ['tag', WEB_BOT_AUTH_TAG],
  ])],
]]))

const REFUSAL_HEADERS: Record<string, string> = Object.freeze({ 'accept-signature': ACCEPT_SIGNATURE }) as Record<string, string>

/** What the verifier reads of a request. */
export interface SignedRequest {
  /** The method as sent. */
  method: string
  /** The authority as the client sent it: the Host header (HTTP/1.1) or `:authority` (HTTP/2). */
  authority: string
  /** The request target as sent (origin form: path and query, e.g. `/challenge?x=1`). */
  target: string
  scheme: 'https' | 'http'
  /** Header fields by lowercase name (node's `req.headers`). */
  headers: Readonly<Record<string, string | readonly string[] | undefined>>
  /**
   * The field lines as received, name then value (node's `req.rawHeaders`): read for the covered
   * fields node's `headers` does not combine as RFC 9421 section 2.1 does (NOT_COMBINED).
   */
  rawHeaders?: readonly string[]
}

/** A directory lookup's answer: the key, or why there is none. */
export type KeyLookup = KeyObject | 'unknown-directory' | 'no-keys' | undefined

export interface VerifyOptions {
  /** The clock, ms since the epoch. */
  now: number
  /** How far in the future `created` may be. */
  skewSeconds: number
  /** Largest `expires - created`. */
  maxValiditySeconds: number
  /**
   * The key of `keyid` in the directory named by `Signature-Agent` (its URL as sent), or in any
   * allowed directory when the request names none.
   */
  resolveKey: (directoryUrl: string | undefined, keyid: string) => KeyLookup | Promise<KeyLookup>
  /**
   * The gate's own authorities, normalized (normalizeAuthority, then comparableAuthority: e.g.
   * `gate.example`, `localhost:8443`, `[::1]:8443`): a request for another host is refused, so that a signature an agent made for
   * another service cannot be replayed here by that service. Unset: any authority.
   */
  authorities?: readonly string[] | undefined
  /** Retry-After of the 503 when a directory's keys are unknown (default 30). */
  retryAfterSeconds?: number | undefined
}

/** A verified signature. */
export interface VerifiedSignature {
  /** Its label in Signature-Input. */
  label: string
  /** The RFC 7638 thumbprint of the key, base64url (as sent). */
  keyid: string
  /** F: the same thumbprint in lowercase hex (64 characters; keyidHex, computed when read). */
  readonly thumbprintHex: string
  nonce: string
  /** ms since the epoch. */
  created: number
  /** ms since the epoch: keep the nonce at least until then. */
  expires: number
  /** The directory URL named by Signature-Agent, as sent, when the request has one. */
  directory?: string
}

/**
 * The refusal of a signature: 401 AOG_SIGNATURE_INVALID with `detail` and Accept-Signature (for the
 * caller's own checks too: a replayed nonce, a denied key).
 */
export function signatureError (detail: string): AogError {
  return new AogError('AOG_SIGNATURE_INVALID', detail, { headers: REFUSAL_HEADERS })
}

function refuse (detail: string): never {
  throw signatureError(detail)
}

function unavailable (detail: string, retryAfter: number, cause?: unknown): never {
  throw new AogError('AOG_UNAVAILABLE', detail, { retryAfter, headers: REFUSAL_HEADERS, cause })
}

/**
 * Fields whose repeated lines node's `headers` does not join with `, ` (RFC 9421 section 2.1): it
 * keeps the first line of each of these and joins `cookie` lines with `; `.
 */
const NOT_COMBINED = new Set(['age', 'authorization', 'content-length', 'content-type', 'cookie', 'etag', 'expires', 'from', 'host',
  'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer',
  'retry-after', 'server', 'user-agent'])

/** A covered field's value: its lines' values, each trimmed, joined by `, ` (RFC 9421 section 2.1). */
function coveredFieldValue (req: SignedRequest, name: string): string | undefined {
  const raw = req.rawHeaders
  if (raw === undefined || !NOT_COMBINED.has(name)) return fieldValue(req, name)
  let value: string | undefined
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!
    if (n.length !== name.length || n.toLowerCase() !== name) continue
    const v = raw[i + 1]!.trim()
    value = value === undefined ? v : `${value}, ${v}`
  }
  return value
}

/** The request's field `name` from node's `headers`: several lines combined with ", " (RFC 9110 section 5.3), each trimmed. */
function fieldValue (req: SignedRequest, name: string): string | undefined {
  const v = Object.hasOwn(req.headers, name) ? req.headers[name] : undefined
  if (v === undefined) return undefined
  if (typeof v === 'string') return v.trim()
  if (v.length === 0) return undefined
  return v.map((x) => x.trim()).join(', ')
}

/** What the parser's result does not show of a dictionary's text (see strictDictionary). */
interface TextShape {
  /** Members at the top level. */
  members: number
  /** Parameters, at every level (each begins with a `;` outside strings). */
  params: number
  /** A whole decimal (`1.0`), which the parser returns as the same number as the integer `1`. */
  wholeDecimal: boolean
}

/**
 * The shape of a dictionary's text. Called only on text that parsed as a dictionary, where commas
 * outside strings and inner lists separate members (tokens, byte sequences and dates hold no comma,
 * quote or parenthesis of their own), a backslash escapes within a string but not within a display
 * string (`%"…"`, RFC 9651), and a number is a bare item that begins right after `=`, `(` or a space.
 */
function textShape (text: string): TextShape {
  let members = 1
  let params = 0
  let depth = 0
  let inString = false
  let display = false
  let numberAt = -1
  let wholeDecimal = false
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : -1
    if (inString) {
      if (c === 0x5c && !display) i++
      else if (c === 0x22) inString = false
      continue
    }
    if (numberAt >= 0) {
      if ((c >= 0x30 && c <= 0x39) || c === 0x2e) continue
      if (/\.0+$/.test(text.slice(numberAt, i))) wholeDecimal = true
      numberAt = -1
    }
    if (c === 0x22) {
      inString = true
      display = i > 0 && text.charCodeAt(i - 1) === 0x25
    } else if (c === 0x28) depth++
    else if (c === 0x29) depth--
    else if (c === 0x2c && depth === 0) members++
    else if (c === 0x3b) params++
    else if ((c === 0x2d || (c >= 0x30 && c <= 0x39)) && i > 0 && '=( '.includes(text[i - 1]!)) numberAt = i
  }
  return { members, params, wholeDecimal }
}

/** The parameters a parsed dictionary holds, at every level. */
function parameterCount (dict: Dictionary): number {
  let n = 0
  for (const member of dict.values()) {
    n += member[1].size
    if (isInnerList(member)) for (const item of member[0]) n += item[1].size
  }
  return n
}

/**
 * A bounded structured dictionary whose labels, and each item's parameter keys, are all distinct
 * (RFC 8941 keeps the last of a repeated key, where another reader could take the first), and
 * which holds no whole decimal (its canonical serialization, `1.0`, would be lost: the signature
 * base would hold `1`, where another verifier builds `1.0`), or the refusal naming the field.
 */
function strictDictionary (text: string, field: string): Dictionary {
  // A canonical text (what signers send) holds neither a repeated label nor a decimal.
  return canonicalField(text, field) ?? libraryDictionary(text, field)
}

/** canonicalDictionary of a field within MAX_FIELD_LENGTH (the refusal naming it otherwise). */
function canonicalField (text: string, field: string): Dictionary | undefined {
  if (text.length > MAX_FIELD_LENGTH) refuse(`${field} exceeds ${MAX_FIELD_LENGTH} characters`)
  return canonicalDictionary(text)
}

/** strictDictionary of a text that is not canonical: parsed by structured-headers, then checked. */
function libraryDictionary (text: string, field: string): Dictionary {
  let dict: Dictionary
  try {
    dict = parseDictionary(text)
  } catch {
    refuse(`${field} is not a valid structured dictionary (RFC 8941)`)
  }
  if (dict.size === 0) return dict
  const shape = textShape(text)
  if (shape.members !== dict.size) refuse(`${field} repeats a label`)
  if (shape.params !== parameterCount(dict)) refuse(`${field} repeats a parameter`)
  if (shape.wholeDecimal) refuse(`${field} holds a decimal with no fraction (1.0): send an integer`)
  return dict
}

/** A label or a name from the request, as a refusal's detail shows it: at most 64 characters. */
function shown (s: string): string {
  return s.length <= 64 ? s : `${s.slice(0, 64)}…`
}

const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/

/** A covered component: its identifier as serialized, its name and its parameters. */
interface Covered {
  id: string
  name: string
  params: Parameters
}

/** A string as an sf-string (RFC 8941 section 4.1.6): quoted, `"` and `\\` escaped. */
function quoted (s: string): string {
  return s.includes('"') || s.includes('\\') ? `"${s.replace(/["\\]/g, '\\$&')}"` : `"${s}"`
}

/** The covered components of a signature (coveredComponents), and which of the required ones are there. */
interface CoveredList {
  list: Covered[]
  /** `@authority` or `@target-uri`. */
  authority: boolean
  method: boolean
  path: boolean
  agent: boolean
}

/**
 * coveredComponents of an inner list's items, kept per items array: the canonical reader gives an
 * agent's repeated list of components as the same array (canonical-dictionary.ts), so they are
 * validated once. Shared: never changed.
 */
const coveredKept = new WeakMap<readonly Item[], CoveredList>()

function coveredOf (il: InnerList): CoveredList {
  let c = coveredKept.get(il[0])
  if (c === undefined) {
    const list = coveredComponents(il)
    const has = (name: string): boolean => list.some((x) => x.name === name)
    c = { list, authority: has('@authority') || has('@target-uri'), method: has('@method'), path: has('@path'), agent: has('signature-agent') }
    coveredKept.set(il[0], c)
  }
  return c
}

/**
 * The covered components of a signature, validated (RFC 9421 sections 2.1, 2.2, 2.5). Their
 * identifiers are serialized here: a derived name or a field name in quotes, and the key parameter.
 */
function coveredComponents (il: InnerList): Covered[] {
  const items = il[0]
  if (items.length > MAX_COVERED_COMPONENTS) refuse(`signature covers more than ${MAX_COVERED_COMPONENTS} components`)
  const out: Covered[] = []
  const seen = new Set<string>()
  for (const item of items) {
    const name = item[0]
    if (typeof name !== 'string') refuse('a covered component is not a string')
    const params = item[1]
    let id = `"${name}"`
    if (name.startsWith('@')) {
      if (!DERIVED.has(name)) refuse(`component ${FIELD_NAME.test(name.slice(1)) ? name : '@…'} is not supported`)
      if (params.size > 0) refuse(`component ${name} takes no parameter here`)
    } else {
      if (!FIELD_NAME.test(name)) refuse('a covered component is not a lowercase field name')
      for (const [p, v] of params) {
        if (p !== 'key') refuse(`component parameter ${FIELD_NAME.test(p) ? p : '…'} is not supported (only key)`)
        if (typeof v !== 'string') refuse(`the key parameter of ${shown(name)} is not a string`)
        id += `;key=${quoted(v)}`
      }
    }
    if (seen.has(id)) refuse(`signature covers ${shown(name)} twice`)
    seen.add(id)
    out.push({ id, name, params })
  }
  return out
}

/**
 * The `@signature-params` value (RFC 9421 section 2.3): the inner list of the covered identifiers
 * and the parameters, serialized as RFC 8941 does; integers and strings here, the rarer types by
 * `structured-headers`.
 */
function signatureParams (covered: Covered[], params: Parameters): string {
  let s = '('
  for (let i = 0; i < covered.length; i++) s += i === 0 ? covered[i]!.id : ` ${covered[i]!.id}`
  s += ')'
  for (const [k, v] of params) {
    if (v === true) s += `;${k}`
    else if (typeof v === 'number' && Number.isSafeInteger(v)) s += `;${k}=${v}`
    else if (typeof v === 'string') s += `;${k}=${quoted(v)}`
    else s += librarySerialized(() => serializeParameters(new Map([[k, v]])))
  }
  return s
}

/** A serialization by `structured-headers` of a value it parsed; a throw is a refusal, never a 500. */
function librarySerialized (f: () => string): string {
  try {
    return f()
  } catch {
    refuse('a signed structured value cannot be serialized')
  }
}

const DERIVED = new Set(['@method', '@target-uri', '@authority', '@scheme', '@request-target', '@path', '@query'])

/**
 * The authority as RFC 9421 section 2.2.3 compares it (HTTP section 4.2.3): lowercase, without the
 * scheme's default port.
 */
export function normalizeAuthority (authority: string, scheme: 'https' | 'http'): string {
  let a = authority.trim().toLowerCase()
  if (a.endsWith(':')) a = a.slice(0, -1)
  const port = scheme === 'https' ? ':443' : ':80'
  if (a.endsWith(port)) a = a.slice(0, -port.length)
  return a
}

/**
 * `authority` (normalized) with an IPv6 literal host in its canonical text (`[0:0::1]` → `[::1]`),
 * for comparison with the gate's own authorities only (the signature base keeps the authority as
 * sent); any other authority as it is. The port is left as written.
 */
export function comparableAuthority (authority: string): string {
  if (authority.charCodeAt(0) !== 0x5b) return authority
  const end = authority.indexOf(']')
  if (end === -1) return authority
  try {
    return new URL(`x://${authority.slice(0, end + 1)}`).host + authority.slice(end + 1)
  } catch {
    return authority
  }
}

/** A Signature-Agent value, parsed once per request: its dictionary form, or the older form's URL. */
type AgentField = Dictionary | string

/** A Signature-Agent value, parsed once per text (textMemo). */
const agentField = textMemo(256, parseAgentField)

function parseAgentField (text: string): AgentField {
  if (text.length > MAX_FIELD_LENGTH) refuse(`Signature-Agent exceeds ${MAX_FIELD_LENGTH} characters`)
  // The older form is one string; a dictionary member begins with a key, which a string cannot.
  if (text.startsWith('"')) {
    let item: Item
    try {
      item = parseItem(text)
    } catch {
      refuse('Signature-Agent is not a valid structured field (RFC 8941)')
    }
    if (typeof item[0] !== 'string') refuse('Signature-Agent is not a string')
    return item[0]
  }
  return strictDictionary(text, 'Signature-Agent')
}

/** The URL of a Signature-Agent dictionary member: a string, of the directory type. */
function memberUrl (member: Item | InnerList): string {
  if (isInnerList(member) || typeof member[0] !== 'string') refuse('a Signature-Agent member is not a string')
  const type = member[1].get('type')
  if (type !== undefined && !(type instanceof Token && type.toString() === 'directory')) refuse('Signature-Agent type is not supported (only directory)')
  return member[0]
}

/** The directory URL a signature's Signature-Agent names (see the module comment). */
function agentDirectory (agent: AgentField, key: string | undefined): string {
  if (typeof agent === 'string') {
    if (key !== undefined) refuse('Signature-Agent is not a dictionary, yet the signature covers a member of it')
    return agent
  }
  if (key === undefined) {
    if (agent.size !== 1) refuse('Signature-Agent names several directories: cover one member with ;key=')
    return memberUrl(agent.values().next().value!)
  }
  const member = agent.get(key)
  if (member === undefined) refuse('Signature-Agent has no member named by the covered key')
  return memberUrl(member)
}

/** The canonical serialization of a parsed dictionary member (RFC 9421 section 2.1.2). */
function serialized (member: Item | InnerList): string {
  if (!isInnerList(member) && typeof member[0] === 'string' && member[1].size === 0) return quoted(member[0])
  return librarySerialized(() => isInnerList(member) ? serializeInnerList(member) : serializeItem(member))
}

/** A non-ASCII or control character other than HTAB in a component value. */
const UNSAFE_VALUE = /[^\t\x20-\x7e]/

interface Base {
  base: string
  /** The directory named by a covered Signature-Agent. */
  directory: string | undefined
}

/**
 * The signature base (RFC 9421 section 2.5) of `il`, whose components are `covered`, refusing for a
 * component the request does not have. `authority` is the request's, normalized; `paramsText`, when
 * given, is the inner list's text in a canonical field, which is its serialization.
 */
function buildBase (req: SignedRequest, il: InnerList, covered: Covered[], agent: AgentField | undefined, authority: string, paramsText: string | undefined): Base {
  const q = req.target.indexOf('?')
  const path = q < 0 ? req.target : req.target.slice(0, q)
  const query = q < 0 ? '?' : req.target.slice(q)
  let base = ''
  let directory: string | undefined
  let agentCovered = false
  for (const c of covered) {
    let value: string
    if (c.name.startsWith('@')) {
      if (c.name !== '@method' && c.name !== '@authority' && c.name !== '@scheme' && !req.target.startsWith('/')) refuse('the request target is not in origin form')
      switch (c.name) {
        case '@method': value = req.method; break
        case '@authority': value = authority; break
        case '@scheme': value = req.scheme; break
        case '@target-uri': value = `${req.scheme}://${authority}${req.target}`; break
        case '@request-target': value = req.target; break
        case '@path': value = path; break
        default: value = query
      }
      if (value === '') refuse(`the request has no ${c.name}`)
    } else {
      const raw = coveredFieldValue(req, c.name)
      if (raw === undefined) refuse(`signature covers ${shown(c.name)}, which the request does not have`)
      const key = c.params.get('key') as string | undefined
      if (c.name === 'signature-agent') {
        if (agentCovered) refuse('signature covers signature-agent twice')
        agentCovered = true
        directory = agentDirectory(agent!, key)
      }
      if (key === undefined) value = raw
      else {
        // A string Signature-Agent with a covered key was refused by agentDirectory.
        const dict = c.name === 'signature-agent' ? agent as Dictionary : strictDictionary(raw, c.name)
        const member = dict.get(key)
        if (member === undefined) refuse(`${shown(c.name)} has no member named by the covered key`)
        value = serialized(member)
      }
    }
    if (UNSAFE_VALUE.test(value)) refuse(`${shown(c.name)} has a character a signature base cannot hold`)
    base += `${c.id}: ${value}\n`
  }
  base += `"@signature-params": ${paramsText ?? signatureParams(covered, il[1])}`
  return { base, directory }
}

/**
 * The signature base of the signature labelled `label` in `signatureInput`, for `req` (test vectors,
 * the documentation's worked example). Throws the verifier's refusals.
 */
export function signatureBase (req: SignedRequest, signatureInput: string, label: string): string {
  const member = strictDictionary(signatureInput, 'Signature-Input').get(label)
  if (member === undefined || !isInnerList(member)) refuse(`Signature-Input has no inner list labelled ${shown(label)}`)
  const sent = fieldValue(req, 'signature-agent')
  return buildBase(req, member, coveredComponents(member), sent === undefined ? undefined : agentField(sent), normalizeAuthority(req.authority, req.scheme), undefined).base
}

/**
 * The bytes of the signature labelled `label` in the Signature field `text`: read directly when the
 * field holds just that one signature, written canonically (as signers send it), else from the
 * whole dictionary; the refusal naming the field otherwise. The bytes may be a view into Buffer's
 * shared pool: only they are read (never their `.buffer`).
 */
function signatureBytes (text: string, label: string): Buffer {
  const one = text.length <= MAX_FIELD_LENGTH ? canonicalByteSequence(text) : undefined
  if (one !== undefined && one.key === label) return one.bytes
  const member = strictDictionary(text, 'Signature').get(label)
  if (member === undefined) refuse(`Signature has no member labelled ${shown(label)}`)
  if (isInnerList(member) || !(member[0] instanceof ArrayBuffer)) refuse(`Signature member ${shown(label)} is not a byte sequence`)
  return Buffer.from(member[0])
}

const thumbprints = new WeakMap<KeyObject, string>()

/**
 * The RFC 7638 SHA-256 thumbprint of a key (public, or the public half of a private one), base64url;
 * computed once per KeyObject.
 */
export function keyThumbprint (key: KeyObject): string {
  let t = thumbprints.get(key)
  if (t === undefined) {
    t = jwkThumbprint(publicJwk(key))
    thumbprints.set(key, t)
  }
  return t
}

/** F of a keyid: the thumbprint it encodes (base64url) in lowercase hex. */
export function keyidHex (keyid: string): string {
  return Buffer.from(keyid, 'base64url').toString('hex')
}

/** A SHA-256 thumbprint in base64url: 43 characters without padding. */
const THUMBPRINT = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/
/** The last keyid that matched THUMBPRINT: an agent's requests repeat it (a comparison, not the regex). */
let lastThumbprint: string | undefined

function isThenable (x: unknown): x is PromiseLike<unknown> {
  return x instanceof Promise || (typeof x === 'object' && x !== null && typeof (x as { then?: unknown }).then === 'function')
}

function integerParam (params: Parameters, name: 'created' | 'expires'): number {
  const v = params.get(name)
  if (v === undefined) refuse(`${name} missing`)
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) refuse(`${name} is not an integer`)
  return v
}

/**
 * Verify the Web Bot Auth signature of a request: every check of docs/protocol.md section 8 in
 * order (see the module comment). The nonce's single use and the deny list are left to the caller.
 */
export async function verifyRequest (req: SignedRequest, opts: VerifyOptions): Promise<VerifiedSignature> {
  const inputText = fieldValue(req, 'signature-input')
  const sigText = fieldValue(req, 'signature')
  if (inputText === undefined) refuse('Signature-Input header missing')
  if (sigText === undefined) refuse('Signature header missing')
  // A canonical field is its own serialization: then the one signature's `@signature-params` is the
  // text after its label (canonical-dictionary.ts).
  const canonical = canonicalField(inputText, 'Signature-Input')
  const inputs = canonical ?? libraryDictionary(inputText, 'Signature-Input')

  // 1. The one signature labelled with the Web Bot Auth tag.
  let label: string | undefined
  let il: InnerList | undefined
  for (const [k, v] of inputs) {
    if (v[1].get('tag') !== WEB_BOT_AUTH_TAG) continue
    if (!isInnerList(v)) refuse(`Signature-Input member ${shown(k)} is not an inner list`)
    if (label !== undefined) refuse(`more than one signature labelled with tag="${WEB_BOT_AUTH_TAG}"`)
    label = k
    il = v
  }
  if (label === undefined || il === undefined) refuse(`no signature labelled with tag="${WEB_BOT_AUTH_TAG}"`)
  const signature = signatureBytes(sigText, label)

  // 2. What it covers: @authority (or @target-uri), @method, @path, signature-agent when sent.
  const covered = coveredOf(il)
  if (!covered.authority) refuse('signature does not cover @authority')
  if (!covered.method) refuse('signature does not cover @method')
  if (!covered.path) refuse('signature does not cover @path')
  const agentText = fieldValue(req, 'signature-agent')
  if (agentText !== undefined && !covered.agent) refuse('signature does not cover signature-agent')
  const authority = normalizeAuthority(req.authority, req.scheme)
  if (opts.authorities !== undefined && !opts.authorities.includes(comparableAuthority(authority))) {
    refuse('signature is for another host: @authority is not this gate')
  }
  const paramsText = canonical !== undefined && canonical.size === 1 ? inputText.slice(label.length + 1) : undefined
  const { base, directory } = buildBase(req, il, covered.list, agentText === undefined ? undefined : agentField(agentText), authority, paramsText)

  // 3. created not in the future beyond the skew; validity within the maximum.
  const params = il[1]
  const created = integerParam(params, 'created')
  const expires = integerParam(params, 'expires')
  if (created * 1000 > opts.now + opts.skewSeconds * 1000) refuse('created is in the future')
  if (expires <= created) refuse('expires is not after created')
  if (expires - created > opts.maxValiditySeconds) refuse(`expires - created exceeds ${opts.maxValiditySeconds} s`)

  // 4. Not expired: a signature is refused from its `expires` on, so a nonce kept until then (and
  // the skew, for an instance whose clock is behind) suffices.
  if (opts.now >= expires * 1000) refuse('signature expired')

  // 5. A nonce (its single use is the caller's).
  const nonce = params.get('nonce')
  if (nonce === undefined || nonce === '') refuse('nonce missing')
  if (typeof nonce !== 'string') refuse('nonce is not a string')
  if (nonce.length > MAX_NONCE_LENGTH) refuse(`nonce is longer than ${MAX_NONCE_LENGTH} characters`)

  // 6. The key: keyid in the directory named by Signature-Agent.
  const keyid = params.get('keyid')
  if (keyid === undefined) refuse('keyid missing')
  if (typeof keyid !== 'string' || (keyid !== lastThumbprint && !THUMBPRINT.test(keyid))) refuse('keyid is not an RFC 7638 JWK thumbprint (SHA-256, base64url)')
  lastThumbprint = keyid
  const alg = params.get('alg')
  if (alg !== undefined && alg !== 'ed25519') refuse('alg is not supported (only "ed25519")')
  const retryAfter = opts.retryAfterSeconds ?? 30
  let found: KeyLookup
  try {
    const lookup = opts.resolveKey(directory, keyid)
    // A key known now is used without a turn of the event loop; any thenable is awaited.
    found = isThenable(lookup) ? await lookup : lookup
  } catch (err) {
    if (err instanceof AogError) throw err
    unavailable('the key directory could not be read', retryAfter, err)
  }
  if (found === 'unknown-directory') refuse('the directory named by Signature-Agent is not allowed')
  if (found === 'no-keys') unavailable(directory === undefined ? 'no keys are known for an allowed directory, and the key is in none of the others' : 'no keys are known for the directory named by Signature-Agent', retryAfter)
  if (found === undefined) refuse(directory === undefined ? 'keyid not in any allowed directory' : 'keyid not in the directory named by Signature-Agent')
  if (found.asymmetricKeyType !== 'ed25519') refuse('the key is not an Ed25519 key (only ed25519 is supported)')
  if (keyThumbprint(found) !== keyid) refuse('keyid is not the thumbprint of the directory key')

  // 7. The signature.
  if (!await verifyInBatch(Buffer.from(base, 'latin1'), found, signature)) refuse('signature does not verify')
  return new Verified(label, keyid, nonce, created * 1000, expires * 1000, directory)
}

/**
 * verifyRequest's result. A class, so that thumbprintHex is one getter on the prototype: a getter in
 * an object literal is a new closure per call, which keeps part of the call's parse alive with each
 * result (docs/decisions/signature-cost.md).
 */
class Verified implements VerifiedSignature {
  declare readonly directory?: string
  constructor (readonly label: string, readonly keyid: string, readonly nonce: string, readonly created: number, readonly expires: number, directory: string | undefined) {
    if (directory !== undefined) this.directory = directory
  }

  get thumbprintHex (): string { return keyidHex(this.keyid) }
}
