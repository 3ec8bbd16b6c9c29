/**
 * The verification pool: worker_threads running lib/verification/worker.ts.
 *
 * Hand-written rather than piscina: the gate needs admission *before* it burns a nonce (tryReserve,
 * so a full queue answers 503 and the agent can retry with the same nonce), a per-task timeout that
 * replaces the stuck worker, and queue/utilisation figures for metrics; each is a few lines here
 * and would be glue around piscina anyway. A task is a batch of chain segments; `full` mode splits
 * the segments of one submission into one batch per worker so they run in parallel.
 */
import { Worker } from 'node:worker_threads'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { PoolBusyError } from '../errors.js'
import type { Segment, VerifyReply, VerifyRequest, WorkerInit, WorkerReady } from './messages.js'

export interface PoolOptions {
  size: number
  /** Tasks that may wait for a worker beyond those running. */
  maxQueue: number
  taskTimeoutMs: number
  implementation?: string
  /** Called whenever queue depth or utilisation changes. */
  onStats?: (s: PoolStats) => void
  /** Called when a worker dies or is replaced (for the log). */
  onWorkerError?: (err: Error) => void
}

export interface PoolStats {
  size: number
  busy: number
  queued: number
  reserved: number
}

export interface VerifyOutcome {
  ok: boolean
  /** Index (in the submitted list) of the first failing segment, -1 when ok. */
  failed: number
}

interface Task {
  id: number
  segments: Segment[]
  resolve: (r: VerifyReply) => void
  reject: (e: Error) => void
}

interface Slot {
  worker: Worker
  task: Task | undefined
  timer: NodeJS.Timeout | undefined
  ready: boolean
}

function workerUrl (): URL {
  const js = new URL('./worker.js', import.meta.url)
  // Running from TypeScript sources (tests): the loader that runs us also runs the .ts worker.
  return existsSync(fileURLToPath(js)) ? js : new URL('./worker.ts', import.meta.url)
}

export class VerifyPool {
  readonly #opts: PoolOptions
  readonly #slots: Slot[] = []
  readonly #queue: Task[] = []
  #reserved = 0
  #nextId = 1
  #closed = false
  #implementation = 'unknown'
  #readyWaiters: Array<() => void> = []
  #startError: Error | undefined

  constructor (opts: PoolOptions) {
    this.#opts = opts
    for (let i = 0; i < opts.size; i++) this.#slots.push(this.#spawn())
  }

  /** Resolves once every worker has started and chosen its chain implementation. */
  async ready (): Promise<string> {
    while (!this.#slots.every((s) => s.ready)) {
      if (this.#startError !== undefined) throw this.#startError
      if (this.#closed) throw new PoolBusyError('closed', 'pool closed')
      await new Promise<void>((resolve) => this.#readyWaiters.push(resolve))
    }
    return this.#implementation
  }

  get size (): number { return this.#opts.size }

  /** True when the pool is open and at least one worker is running. */
  get up (): boolean { return !this.#closed && this.#slots.some((s) => s.ready) }

  stats (): PoolStats {
    return { size: this.#slots.length, busy: this.#slots.filter((s) => s.task !== undefined).length, queued: this.#queue.length, reserved: this.#reserved }
  }

  /**
   * Reserve room for `n` tasks (run() with reserved=true consumes the reservation). False when the
   * running + waiting + reserved tasks would exceed workers + maxQueue.
   */
  tryReserve (n: number): boolean {
    if (!this.#hasRoom(n)) return false
    this.#reserved += n
    return true
  }

  #hasRoom (n: number): boolean {
    if (this.#closed) return false
    const s = this.stats()
    return s.busy + s.queued + s.reserved + n <= s.size + this.#opts.maxQueue
  }

  /** Give back reservations that will not be used. */
  release (n: number): void {
    this.#reserved = Math.max(0, this.#reserved - n)
  }

  /**
   * Verify batches of segments, each batch one task; resolves with the first failure (by segment
   * index across all batches) or ok. With `reserved`, consumes a prior tryReserve(batches.length).
   */
  async verify (batches: Segment[][], reserved: boolean): Promise<VerifyOutcome> {
    if (reserved) this.release(batches.length)
    else if (!this.#hasRoom(batches.length)) throw new PoolBusyError('queue-full', 'verification queue full')
    const replies = await Promise.all(batches.map((segments) => this.#submit(segments)))
    let offset = 0
    for (let i = 0; i < replies.length; i++) {
      const r = replies[i]!
      if (!r.ok) return { ok: false, failed: offset + r.failed }
      offset += batches[i]!.length
    }
    return { ok: true, failed: -1 }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const t of this.#queue.splice(0)) t.reject(new PoolBusyError('closed', 'pool closed'))
    for (const w of this.#readyWaiters.splice(0)) w()
    await Promise.all(this.#slots.map(async (s) => {
      if (s.timer !== undefined) clearTimeout(s.timer)
      s.task?.reject(new PoolBusyError('closed', 'pool closed'))
      s.task = undefined
      await s.worker.terminate()
    }))
    this.#emit()
  }

  #submit (segments: Segment[]): Promise<VerifyReply> {
    return new Promise<VerifyReply>((resolve, reject) => {
      if (this.#closed) { reject(new PoolBusyError('closed', 'pool closed')); return }
      this.#queue.push({ id: this.#nextId++, segments, resolve, reject })
      this.#dispatch()
    })
  }

  #dispatch (): void {
    for (const slot of this.#slots) {
      if (this.#queue.length === 0) break
      if (slot.task !== undefined || !slot.ready) continue
      const task = this.#queue.shift()!
      slot.task = task
      slot.timer = setTimeout(() => this.#timeout(slot), this.#opts.taskTimeoutMs)
      slot.worker.postMessage({ id: task.id, segments: task.segments } satisfies VerifyRequest)
    }
    this.#emit()
  }

  #spawn (): Slot {
    const worker = new Worker(workerUrl(), { workerData: { implementation: this.#opts.implementation ?? 'auto' } satisfies WorkerInit })
    const slot: Slot = { worker, task: undefined, timer: undefined, ready: false }
    worker.on('message', (m: VerifyReply | WorkerReady) => {
      if ('ready' in m) {
        slot.ready = true
        this.#implementation = m.implementation
        for (const w of this.#readyWaiters.splice(0)) w()
        this.#dispatch()
        return
      }
      const task = slot.task
      if (task === undefined || task.id !== m.id) return
      clearTimeout(slot.timer)
      slot.task = undefined
      slot.timer = undefined
      task.resolve(m)
      this.#dispatch()
    })
    worker.on('error', (err) => {
      // A worker that cannot start (e.g. --chain native without the addon) would be replaced
      // forever: close the pool instead, so ready() rejects and the gate refuses to start.
      if (!slot.ready && !this.#slots.some((s) => s.ready)) {
        this.#opts.onWorkerError?.(err)
        this.#startError = err
        void this.close()
        return
      }
      this.#replace(slot, err)
    })
    worker.on('exit', (code) => { if (!this.#closed) this.#replace(slot, new Error(`worker exited with code ${code}`)) })
    return slot
  }

  #timeout (slot: Slot): void {
    const task = slot.task
    slot.task = undefined
    task?.reject(new PoolBusyError('timeout', `verification exceeded ${this.#opts.taskTimeoutMs} ms`))
    this.#replace(slot, new Error('verification task timed out; worker replaced'))
  }

  #replace (slot: Slot, err: Error): void {
    const i = this.#slots.indexOf(slot)
    if (i === -1 || this.#closed) return
    if (slot.timer !== undefined) clearTimeout(slot.timer)
    slot.task?.reject(new PoolBusyError('worker-error', 'verification worker failed'))
    slot.task = undefined
    slot.worker.removeAllListeners()
    void slot.worker.terminate()
    this.#opts.onWorkerError?.(err)
    this.#slots[i] = this.#spawn()
    this.#emit()
  }

  #emit (): void {
    this.#opts.onStats?.(this.stats())
  }
}
