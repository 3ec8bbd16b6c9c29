/** Worker entry: verifies chain segments (recompute, then constant-time compare). */
import { parentPort, workerData } from 'node:worker_threads'
import { timingSafeEqual } from 'node:crypto'
import { selectChain } from '../chain/select.js'
import type { VerifyReply, VerifyRequest, WorkerInit, WorkerReady } from './messages.js'

const port = parentPort
if (port === null) throw new Error('worker.ts must run in a worker thread')
const impl = await selectChain((workerData as WorkerInit).implementation)
port.postMessage({ ready: true, implementation: impl.name } satisfies WorkerReady)

port.on('message', (req: VerifyRequest) => {
  let failed = -1
  for (let i = 0; i < req.segments.length; i++) {
    const s = req.segments[i]!
    const d = new Uint8Array(s.start)
    impl.iterate(d, s.key, s.n)
    if (s.expected.length !== 32 || !timingSafeEqual(d, s.expected)) {
      failed = i
      break
    }
  }
  port.postMessage({ id: req.id, ok: failed === -1, failed } satisfies VerifyReply)
})
