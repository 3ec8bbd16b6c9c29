/**
 * AOG's public API: what a program that embeds the gate, writes its own store, or builds an agent
 * needs. Named exports only; everything else in lib/ is internal and may change without notice.
 */

// Embedding the gate.
export { createGate } from './gate/index.js'
export type { Gate, GateDeps, GateAddresses } from './gate/index.js'
export { loadConfig, readConfigFile, fromEnv, ConfigError } from './config.js'
export type { Config } from './config.js'
export { createLogger } from './log.js'
export type { Logger } from './log.js'
export { createMetrics } from './metrics.js'
export type { Metrics } from './metrics.js'

// Errors: the public codes (docs/protocol.md section 5) and the error a custom store throws when
// it cannot be reached (the gate then answers 503, fail closed).
export { AogError, ERRORS, StoreUnavailableError } from './errors.js'
export type { ErrorCode } from './errors.js'

// Stores: the contract (a custom store implements Store) and the embedded memory store.
export { MemoryStore } from './stores/memory.js'
export { IssueStatus, ConsumeStatus, TakeStatus, AuthorizeStatus, BindStatus } from './stores/store.js'
export type {
  Store, ChallengeRecord, BucketSpec, RateState, OnceKey, IssueRequest, IssueResult, ConsumeRequest, ConsumeResult,
  BindRequest, BindResult, TakeRequest, TakeResult, GrantSpec, Grant, AuthorizeRequest, AuthorizeResult,
} from './stores/store.js'

// The computation (docs/protocol.md section 3), for agents in this process.
export { ALGORITHM, initialDigest, chainKey, solveChain, traceHash } from './chain/chain.js'
export type { Solution, ChainParams } from './chain/chain.js'
export { fingerprintOf } from './identity/tls.js'
export type { Identity } from './identity/tls.js'

// The agent library.
export { createAgent, getChallenge, solve, solveAsync, submitTask, pass, certificateFingerprint, GateError, localAttestationSigner, localAttestationJwks } from './client/agent.js'
export type { AgentOptions, AogAgent, ChallengeResponse, TaskBody, TaskResponse, FetchInit, FetchResponse, AttestationProvider, LocalAttestationSignerOptions } from './client/agent.js'
