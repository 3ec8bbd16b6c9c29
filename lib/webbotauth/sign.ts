/**
 * The agent side of Web Bot Auth (docs/protocol.md section 8): the `Signature-Input`, `Signature`
 * and `Signature-Agent` headers of a request, signed with an Ed25519 key whose RFC 7638 thumbprint
 * is the `keyid`, with a fresh nonce, `created`/`expires` and `tag="web-bot-auth"`, covering
 * `@method`, `@authority`, `@path` and, when a directory is named, `signature-agent`.
 *
 * The signature base is built by the verifier's own builder (httpsig.ts) from the serialized
 * `Signature-Input`, so that what is signed is what the gate rebuilds; the tests check both against
 * independent implementations (http-message-signatures, web-bot-auth).
 */
import { randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { serializeDictionary, serializeItem, type BareItem, type Item } from 'structured-headers'
import { keyThumbprint, signatureBase, WEB_BOT_AUTH_TAG } from './httpsig.js'

/** Random bytes of a nonce (as web-bot-auth makes them), sent in base64. */
export const NONCE_BYTES = 64

/** The request to sign, as it will be sent. */
export interface RequestToSign {
  method: string
  /** The authority the request is sent to (its Host header), e.g. `gate.example:8443`. */
  authority: string
  /** Path and query as sent, e.g. `/challenge`. */
  target: string
  /** Header fields, for the ones named in `cover`. */
  headers?: Readonly<Record<string, string>>
}

export interface SignRequestOptions {
  /** An Ed25519 private key. */
  key: KeyObject
  /** The agent's key directory (its origin, or the directory's URL), sent as Signature-Agent. */
  directoryUrl?: string | undefined
  /** Signature-Agent as a dictionary member (the draft's form, default) or the older bare string. */
  signatureAgentForm?: 'dictionary' | 'string'
  /** The signature's label (default `sig1`). */
  label?: string
  /** The clock, ms since the epoch (default Date.now()). */
  now?: number
  /** expires - created (default 60). */
  validitySeconds?: number
  /** Header fields to cover besides the required components (lowercase names, from `headers`). */
  cover?: readonly string[]
  /** The nonce (default: NONCE_BYTES random bytes in base64); given only for fixed examples and tests. */
  nonce?: string
}

/** The headers to send (a type, not an interface, so that it passes as a header record). */
export type SignatureHeaders = {
  'signature-input': string
  signature: string
  'signature-agent'?: string
}

const KEY = /^[a-z*][a-z0-9_\-.*]*$/

/** Sign a request (see the module comment). Throws an Error for a key or an option it cannot use. */
export function signRequest (req: RequestToSign, opts: SignRequestOptions): SignatureHeaders {
  const { key } = opts
  if (key.type !== 'private' || key.asymmetricKeyType !== 'ed25519') throw new Error('signRequest: the key must be an Ed25519 private key')
  const label = opts.label ?? 'sig1'
  if (!KEY.test(label)) throw new Error('signRequest: the label must be a structured-field key (lowercase letters, digits, _-.*)')
  const validity = opts.validitySeconds ?? 60
  if (!Number.isInteger(validity) || validity < 1) throw new Error('signRequest: validitySeconds must be a positive integer')
  const created = Math.floor((opts.now ?? Date.now()) / 1000)
  const headers: Record<string, string> = {}
  const components: Item[] = [['@method', new Map()], ['@authority', new Map()], ['@path', new Map()]]
  for (const name of opts.cover ?? []) {
    const lower = name.toLowerCase()
    const value = Object.entries(req.headers ?? {}).find(([k]) => k.toLowerCase() === lower)?.[1]
    if (value === undefined) throw new Error(`signRequest: ${lower} is to be covered but is not among the headers`)
    headers[lower] = value
    components.push([lower, new Map()])
  }
  let agent: string | undefined
  if (opts.directoryUrl !== undefined) {
    const bare = opts.signatureAgentForm === 'string'
    agent = bare ? serializeItem(opts.directoryUrl) : serializeDictionary(new Map([[label, [opts.directoryUrl, new Map()]]]))
    components.push(['signature-agent', new Map(bare ? [] : [['key', label]])])
    headers['signature-agent'] = agent
  }
  const params = new Map<string, BareItem>([
    ['created', created],
    ['expires', created + validity],
    ['keyid', keyThumbprint(key)],
    ['alg', 'ed25519'],
    ['nonce', opts.nonce ?? randomBytes(NONCE_BYTES).toString('base64')],
    ['tag', WEB_BOT_AUTH_TAG],
  ])
  const input = serializeDictionary(new Map([[label, [components, params]]]))
  const base = signatureBase({ method: req.method, authority: req.authority, target: req.target, scheme: 'https', headers }, input, label)
  const signature = cryptoSign(null, Buffer.from(base, 'latin1'), key)
  const out: SignatureHeaders = {
    'signature-input': input,
    signature: serializeDictionary(new Map([[label, [signature, new Map()]]])),
  }
  if (agent !== undefined) out['signature-agent'] = agent
  return out
}
