/**
 * Every metric of the gate, in one prom-client Registry (never the global one), created once in
 * bin/ (or per test) and passed down.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { packageRoot } from './paths.js'
import { FastHistogram } from './histogram.js'

export interface Metrics {
  registry: Registry
  challengesIssued: Counter<'store'>
  submissions: Counter<'outcome' | 'reason'>
  verificationDuration: Histogram<'mode' | 'result'>
  /** Observed on every request: lib/histogram.ts (prom-client's exposition, a fraction of its cost). */
  requestDuration: FastHistogram<'route' | 'method' | 'status'>
  rateLimited: Counter<'route' | 'limit'>
  poolQueueDepth: Gauge
  poolUtilization: Gauge
  poolWorkers: Gauge
  identityFailures: Counter<'reason'>
  storeErrors: Counter<'op'>
  chainImplementation: Gauge<'implementation' | 'kernel'>
  /** Earliest nextUpdate of the CRLs in force (Unix seconds). */
  crlNextUpdate: Gauge
  /** 1 while the CRL in force is past its nextUpdate. */
  crlStale: Gauge
  crlReloads: Counter<'result'>
  /** Connections closed at once because the listener held --max-connections. */
  connectionsDropped: Counter
  authDecisions: Counter<'result' | 'code'>
  grantsIssued: Counter
  upstreamRequests: Counter<'status_class'>
  upstreamDuration: Histogram
  upstreamPool: Gauge<'state'>
  /** Web Bot Auth key directory fetches (and pinned file reads) by outcome. */
  directoryFetches: Counter<'outcome'>
  /** Attestations by issuer (a configured one, or "unknown"), result and reason. */
  attestationOutcomes: Counter<'issuer' | 'result' | 'reason'>
  /** Fetches of the attestation JWKS URLs (configured ones only) by result. */
  attestationJwksFetches: Counter<'url' | 'result'>
  /** 1 for the store's current connection state (ready, connecting, reconnecting, down), 0 for the others. */
  storeState: Gauge<'state'>
  /** Store clients replaced after failing for --redis-replace-after-ms. */
  storeReplacements: Counter
  /** TLS handshakes refused, by the reason OpenSSL gives (a short code). */
  handshakeFailures: Counter<'reason'>
  /** Reloads of files (what: crl, deny, forward_secret, tls, client_ca, log_level, …) by result (ok, failed). */
  reloads: Counter<'what' | 'result'>
  /** Value 1, labelled with the gate version, Node version and chain implementation. */
  buildInfo: Gauge<'version' | 'node' | 'chain'>
}

/** The default metrics that are gauges named like counters (removed; see createMetrics). */
export const TOTAL_GAUGES = ['aog_nodejs_active_handles_total', 'aog_nodejs_active_requests_total', 'aog_nodejs_active_resources_total']

/** Create the registry and every metric. `defaults` adds process metrics (off in unit tests). */
export function createMetrics (opts: { defaults?: boolean } = {}): Metrics {
  const registry = new Registry()
  if (opts.defaults !== false) {
    collectDefaultMetrics({ register: registry, prefix: 'aog_' })
    // prom-client names three gauges …_total, which `promtool check metrics` refuses (a _total suffix
    // means a counter). Each is the sum of its per-type gauge (aog_nodejs_active_handles{type} …):
    // sum() of that gives the same number.
    for (const name of TOTAL_GAUGES) registry.removeSingleMetric(name)
  }
  const registers = [registry]
  return {
    registry,
    challengesIssued: new Counter({ name: 'aog_challenges_issued_total', help: 'Challenges issued.', labelNames: ['store'], registers }),
    submissions: new Counter({ name: 'aog_submissions_total', help: 'POST /task submissions by outcome (accepted|rejected) and reason (error code, or ok).', labelNames: ['outcome', 'reason'], registers }),
    verificationDuration: new Histogram({
      name: 'aog_verification_duration_seconds',
      help: 'Time spent verifying a chain in the worker pool (queue wait included).',
      labelNames: ['mode', 'result'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    requestDuration: new FastHistogram({
      name: 'aog_http_request_duration_seconds',
      help: 'Gate request duration by route, method and status.',
      labelNames: ['route', 'method', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    rateLimited: new Counter({ name: 'aog_rate_limited_total', help: 'Requests refused with 429, by the limit reached: rate (the token bucket) or in_flight (proxied requests in flight).', labelNames: ['route', 'limit'], registers }),
    poolQueueDepth: new Gauge({ name: 'aog_pool_queue_depth', help: 'Verification tasks waiting for a worker.', registers }),
    poolUtilization: new Gauge({ name: 'aog_pool_utilization', help: 'Busy workers / workers (0..1).', registers }),
    poolWorkers: new Gauge({ name: 'aog_pool_workers', help: 'Verification worker threads.', registers }),
    identityFailures: new Counter({ name: 'aog_identity_failures_total', help: 'Requests refused at the identity step, by reason.', labelNames: ['reason'], registers }),
    storeErrors: new Counter({ name: 'aog_store_errors_total', help: 'Store operations that failed (the request got 503).', labelNames: ['op'], registers }),
    chainImplementation: new Gauge({ name: 'aog_chain_implementation_info', help: 'The chain implementation in use and its kernel (sha-ni, openssl or typescript; value 1).', labelNames: ['implementation', 'kernel'], registers }),
    crlNextUpdate: new Gauge({ name: 'aog_crl_next_update_timestamp_seconds', help: 'Earliest nextUpdate of the CRLs in force (Unix time).', registers }),
    crlStale: new Gauge({ name: 'aog_crl_stale', help: '1 while the CRL in force is past its nextUpdate (still enforced per request, not at the handshake).', registers }),
    connectionsDropped: new Counter({ name: 'aog_connections_dropped_total', help: 'New connections closed at once because the gate listener held --max-connections.', registers }),
    authDecisions: new Counter({ name: 'aog_auth_decisions_total', help: 'Protected requests and GET /auth decisions by result (allowed|refused) and code (ok, or the refusal code).', labelNames: ['result', 'code'], registers }),
    grantsIssued: new Counter({ name: 'aog_grants_issued_total', help: 'Grants issued or extended by a pass.', registers }),
    upstreamRequests: new Counter({ name: 'aog_upstream_requests_total', help: 'Requests proxied to the upstream by status class (2xx…5xx, or error when it did not answer).', labelNames: ['status_class'], registers }),
    upstreamDuration: new Histogram({
      name: 'aog_upstream_request_duration_seconds',
      help: 'Time from sending a request to the upstream until its whole response was passed on.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    upstreamPool: new Gauge({ name: 'aog_upstream_pool_connections', help: 'The upstream pool by state: connected, free and size (connections), pending and running (requests).', labelNames: ['state'], registers }),
    directoryFetches: new Counter({ name: 'aog_signature_directory_fetches_total', help: 'Web Bot Auth key directory fetches and pinned file reads (start-up included) by outcome (ok, empty: no usable key, status, redirect, timeout, too_large, invalid, network, file, closed).', labelNames: ['outcome'], registers }),
    crlReloads: new Counter({ name: 'aog_crl_reloads_total', help: 'CRL loads by result (ok, or refused: the previous CRL stays in force).', labelNames: ['result'], registers }),
    attestationOutcomes: new Counter({
      name: 'aog_attestation_outcomes_total',
      help: 'Attestations by issuer (a configured issuer, or unknown), result (accepted, rejected, unavailable) and reason (ok, or why).',
      labelNames: ['issuer', 'result', 'reason'],
      registers,
    }),
    attestationJwksFetches: new Counter({
      name: 'aog_attestation_jwks_fetches_total',
      help: 'Fetches of the attestation JWKS URLs by result (ok, status, timeout, too_large, invalid, network).',
      labelNames: ['url', 'result'],
      registers,
    }),
    storeState: new Gauge({ name: 'aog_store_connection_state', help: 'Store connection state: 1 for the current state (ready, connecting, reconnecting, down), 0 for the others.', labelNames: ['state'], registers }),
    storeReplacements: new Counter({ name: 'aog_store_client_replacements_total', help: 'Store clients replaced after failing every command for --redis-replace-after-ms.', registers }),
    handshakeFailures: new Counter({ name: 'aog_tls_handshake_failures_total', help: 'TLS handshakes refused by the gate listener, by reason (the OpenSSL reason, shortened).', labelNames: ['reason'], registers }),
    reloads: new Counter({ name: 'aog_reloads_total', help: 'Reloads of files and settings by what (crl, deny, forward_secret, tls, client_ca, log_level, …) and result (ok, failed: the previous material stays).', labelNames: ['what', 'result'], registers }),
    buildInfo: new Gauge({ name: 'aog_build_info', help: 'Value 1, labelled with the gate version, the Node.js version and the chain implementation.', labelNames: ['version', 'node', 'chain'], registers }),
  }
}

/** Set aog_build_info to 1 for this gate: its package version, the Node.js version and the chain implementation. */
export function setBuildInfo (metrics: Metrics, chain: string): void {
  metrics.buildInfo.reset()
  metrics.buildInfo.set({ version: packageVersion(), node: process.versions.node, chain }, 1)
}

let version: string | undefined
/** The gate's package version (read once). */
export function packageVersion (): string {
  return (version ??= (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version)
}
