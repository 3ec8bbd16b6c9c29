/**
 * Chooses the chain implementation once at start-up: the native addon where it is built, the
 * TypeScript chain otherwise. The choice is logged and exported as a metric label.
 */
import { typescriptChain, type ChainImpl } from './chain.js'
import { loadNative, nativeChain } from './native.js'

/** `preferred`: 'auto' (best available), 'typescript' or 'native' (an error when not built). */
export async function selectChain (preferred = 'auto'): Promise<ChainImpl> {
  if (preferred === 'typescript') return typescriptChain
  const native = nativeChain()
  if (native !== undefined) return native
  if (preferred === 'native') throw new Error(`the native chain is unavailable: ${loadNative().reason}`)
  return typescriptChain
}

/** Synchronous variant for the agent library. */
export function bestChain (): ChainImpl {
  return nativeChain() ?? typescriptChain
}
