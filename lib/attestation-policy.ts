/**
 * The attestation claim policy (`--attestation-policy FILE`, docs/operations.md "Attestation"): a
 * JSON object from issuer (`iss`) to what its tokens must carry.
 *
 *   { "https://confidentialcomputing.googleapis.com": {
 *       "$nonce": "eat_nonce", "$subject": "eat_nonce", "$audience": "https://gate.example",
 *       "$jwks": "https://www.googleapis.com/service_accounts/v1/metadata/jwk/signer@confidentialspace-sign.iam.gserviceaccount.com",
 *       "dbgstat": "disabled-since-boot",
 *       "submods.container.image_digest": ["sha256:…", "sha256:…"] } }
 *
 * A key without `$` is a claim path, dotted into nested objects; its value is the allowed value or
 * a list of allowed values (strings, numbers, booleans; exact matches). A claim that is an array
 * passes when one of its elements is allowed. The `$` keys say how the token is bound and checked:
 *   $nonce     claim path holding the challenge's nonce (default `nonce`)
 *   $subject   claim path holding the caller's fingerprint F (default `sub`)
 *   $audience  required `aud` (default: --attestation-audience, if set)
 *   $jwks      the key source(s) whose keys may sign this issuer's tokens: a --attestation-jwks-url
 *              URL or the --attestation-jwks file, exactly as configured (default: every source;
 *              required when more than one is configured)
 * A binding claim may hold its value alone or in an array (Confidential Space's `eat_nonce` holds up
 * to six nonces): then it must contain it. The binding cannot be turned off.
 *
 * The file is validated with ajv; errors name the issuer and the key, never a claim value of a
 * token. Claim names that contain a dot cannot be addressed.
 */
import { Ajv, type ErrorObject } from 'ajv'
import { readFileSync } from 'node:fs'

export type PolicyValue = string | number | boolean

export interface ClaimRule {
  /** As written in the file, for messages. */
  path: string
  segments: string[]
  allowed: PolicyValue[]
}

export interface IssuerPolicy {
  issuer: string
  nonceClaim: ClaimRule['segments']
  noncePath: string
  subjectClaim: ClaimRule['segments']
  subjectPath: string
  audience: string | undefined
  /** Key sources as configured (URL or file path); undefined: every source. */
  jwks: string[] | undefined
  claims: ClaimRule[]
}

export type AttestationPolicy = ReadonlyMap<string, IssuerPolicy>

export const DEFAULT_NONCE_CLAIM = 'nonce'
export const DEFAULT_SUBJECT_CLAIM = 'sub'

// A dotted path of non-empty segments; a claim path may not start with `$` (reserved).
const PATH = '^[^.$][^.]*(\\.[^.]+)*$'
const KEY = '^(\\$(nonce|subject|audience|jwks)|[^.$][^.]*(\\.[^.]+)*)$'
const VALUE = { type: ['string', 'number', 'boolean'] }
const ENTRY = {
  type: 'object',
  propertyNames: { pattern: KEY, maxLength: 256 },
  properties: {
    $nonce: { type: 'string', pattern: PATH, maxLength: 256 },
    $subject: { type: 'string', pattern: PATH, maxLength: 256 },
    $audience: { type: 'string', minLength: 1 },
    $jwks: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } }] },
  },
  additionalProperties: { anyOf: [VALUE, { type: 'array', minItems: 1, items: VALUE }] },
}
const SCHEMA = {
  type: 'object',
  minProperties: 1,
  propertyNames: { minLength: 1 },
  additionalProperties: ENTRY,
}

const ajv = new Ajv({ allErrors: true, strict: false })
const validate = ajv.compile(SCHEMA)

/** What each key of an entry must be, for the messages (ajv's own say "must match a schema in anyOf"). */
const EXPECTED: Record<string, string> = {
  $nonce: 'must be a claim path (dotted, e.g. "eat_nonce")',
  $subject: 'must be a claim path (dotted, e.g. "sub")',
  $audience: 'must be a non-empty string',
  $jwks: 'must be a configured JWKS URL or file, or a non-empty list of them',
}

/** A JSON pointer segment unescaped. */
function unpointer (s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~')
}

function describe (errors: ErrorObject[]): string {
  const out = new Set<string>()
  for (const e of errors) {
    // Errors on a property name (propertyNames) carry the name in params.
    const name = (e.params as { propertyName?: string }).propertyName
    const parts = e.instancePath.split('/').slice(1).map(unpointer)
    if (parts.length === 0) {
      if (e.keyword === 'propertyNames' || name !== undefined) out.add('an issuer must be a non-empty string')
      else out.add(e.keyword === 'minProperties' ? 'names no issuer' : 'must be a JSON object of issuer → claims')
      continue
    }
    const issuer = JSON.stringify(parts[0])
    if (parts.length === 1) {
      if (name !== undefined) out.add(`${issuer}: ${JSON.stringify(name)} is neither a claim path nor one of $nonce, $subject, $audience, $jwks`)
      else if (e.keyword !== 'propertyNames') out.add(`${issuer}: must be an object of claim → allowed values`)
      continue
    }
    const key = parts[1]!
    out.add(`${issuer}: ${JSON.stringify(key)} ${EXPECTED[key] ?? 'must be a string, number or boolean, or a non-empty list of them'}`)
  }
  return [...out].join('; ')
}

/**
 * Check and compile a policy (already parsed JSON). Throws an Error whose message says what is
 * wrong (the caller adds the file name).
 */
export function compileAttestationPolicy (raw: unknown, defaultAudience?: string): AttestationPolicy {
  if (!validate(raw)) throw new Error(describe(validate.errors ?? []))
  const out = new Map<string, IssuerPolicy>()
  for (const [issuer, entry] of Object.entries(raw as Record<string, Record<string, unknown>>)) {
    const claims: ClaimRule[] = []
    for (const [path, v] of Object.entries(entry)) {
      if (path.startsWith('$')) continue
      claims.push({ path, segments: path.split('.'), allowed: (Array.isArray(v) ? v : [v]) as PolicyValue[] })
    }
    const nonce = typeof entry.$nonce === 'string' ? entry.$nonce : DEFAULT_NONCE_CLAIM
    const subject = typeof entry.$subject === 'string' ? entry.$subject : DEFAULT_SUBJECT_CLAIM
    const jwks = entry.$jwks === undefined ? undefined : Array.isArray(entry.$jwks) ? entry.$jwks as string[] : [entry.$jwks as string]
    out.set(issuer, {
      issuer,
      nonceClaim: nonce.split('.'),
      noncePath: nonce,
      subjectClaim: subject.split('.'),
      subjectPath: subject,
      audience: typeof entry.$audience === 'string' ? entry.$audience : defaultAudience,
      jwks,
      claims,
    })
  }
  return out
}

/**
 * Read, check and compile the policy file, and check it against the key sources configured
 * (`sources`: the JWKS URLs and file, as written in the configuration): every `$jwks` names one of
 * them, and with more than one source every issuer names its own. Throws an Error naming the
 * file and the problem.
 */
export function readAttestationPolicy (file: string, sources: string[], defaultAudience?: string): AttestationPolicy {
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new Error(err instanceof SyntaxError ? `${file} is not JSON` : `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  let policy: AttestationPolicy
  try {
    policy = compileAttestationPolicy(raw, defaultAudience)
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`)
  }
  const problems: string[] = []
  for (const p of policy.values()) {
    for (const s of p.jwks ?? []) {
      if (!sources.includes(s)) problems.push(`${JSON.stringify(p.issuer)}: $jwks ${JSON.stringify(s)} is not a configured attestationJwksUrl or attestationJwks`)
    }
    if (p.jwks === undefined && sources.length > 1) {
      problems.push(`${JSON.stringify(p.issuer)}: $jwks is required when more than one attestation key source is configured (each issuer names the keys that may sign its tokens)`)
    }
  }
  if (problems.length > 0) throw new Error(`${file}: ${problems.join('; ')}`)
  return policy
}

/** The value at a dotted path of a JWT payload, or undefined. Only own properties are followed. */
export function claimAt (payload: Record<string, unknown>, segments: readonly string[]): unknown {
  let v: unknown = payload
  for (const s of segments) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, s)) return undefined
    v = (v as Record<string, unknown>)[s]
  }
  return v
}

/** A claim value is allowed: equal to an allowed value, or an array with an element that is. */
export function claimAllowed (value: unknown, allowed: readonly PolicyValue[]): boolean {
  if (Array.isArray(value)) return value.some((x) => allowed.includes(x as PolicyValue))
  return allowed.includes(value as PolicyValue)
}

/** A binding claim holds `expected`: equal to it, or an array containing it. */
export function claimBinds (value: unknown, expected: string): boolean {
  return value === expected || (Array.isArray(value) && value.includes(expected))
}
