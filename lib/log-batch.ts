/**
 * The buffered log destination: lines gathered as UTF-8 bytes in one buffer and handed to SonicBoom
 * (in its buffer mode) a batch at a time, so a line costs no buffer of its own; SonicBoom in its
 * string mode would measure the UTF-8 length of its whole pending text on every line instead
 * (docs/decisions/request-log-line.md). SonicBoom's flush and flushSync, which its periodic timer
 * and pino's flush at exit call, hand over what is gathered first.
 */
import type { DestinationStream } from 'pino'

interface Sonic {
  write: (data: string) => boolean
  flush: (cb?: (err?: Error) => unknown) => void
  flushSync: () => void
}

/** Buffer#write without its argument parsing (a third of a short line's cost). */
type Utf8Writable = Buffer & { utf8Write: (s: string, at: number) => number }

export class LineBatch implements DestinationStream {
  /** The bytes gathered, up to `#pos`: room for a batch and a line of up to a batch after it. */
  #buf: Utf8Writable
  #pos = 0

  /** `size`: bytes of a batch (the line that reaches it hands the batch over). */
  constructor (private readonly sonic: Sonic, readonly size: number) {
    this.#buf = Buffer.allocUnsafeSlow(2 * size) as Utf8Writable
    const flush = sonic.flush.bind(sonic)
    const flushSync = sonic.flushSync.bind(sonic)
    sonic.flush = (cb) => { this.#handOver(); flush(cb) }
    sonic.flushSync = () => { this.#handOver(); flushSync() }
  }

  write (line: string): void {
    // UTF-8 takes at most three bytes per UTF-16 unit; a longer line goes on its own.
    if (3 * line.length > this.size) {
      this.#handOver()
      this.sonic.write(Buffer.from(line, 'utf8') as unknown as string)
      return
    }
    this.#pos += this.#buf.utf8Write(line, this.#pos)
    if (this.#pos >= this.size) this.#handOver()
  }

  #handOver (): void {
    if (this.#pos === 0) return
    const bytes = this.#buf.subarray(0, this.#pos)
    // SonicBoom keeps the buffer it is given: the next batch gets a new one.
    this.#buf = Buffer.allocUnsafeSlow(2 * this.size) as Utf8Writable
    this.#pos = 0
    this.sonic.write(bytes as unknown as string)
  }

  flush (cb?: (err?: Error) => void): void { this.sonic.flush(cb) }
  flushSync (): void { this.sonic.flushSync() }
}
