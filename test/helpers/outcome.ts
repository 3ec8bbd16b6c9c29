/** Shared bits of the Redis integration tests. */
import { GateError } from '../../lib/client/agent.js'

export const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** 'accepted', or '<status> <code>[ retry]' (retry: a Retry-After came with it), or 'transport …'. */
export async function outcome (p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'accepted'
  } catch (err) {
    if (err instanceof GateError) return `${err.status} ${err.code}${err.retryAfter !== undefined ? ' retry' : ''}`
    return `transport ${(err as Error).message}`
  }
}
