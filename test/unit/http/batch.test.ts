import t from 'tap'
import { EventEmitter } from 'node:events'
import { ResponseBatch, type Pending } from '../../../lib/http/batch.js'

/** A ServerResponse stand-in that records what was written to it, and when. */
class FakeResponse extends EventEmitter {
  destroyed = false
  statusCode = 200
  head: { status: number, headers: string[] } | undefined
  body: string | undefined
  constructor (readonly log: string[], readonly name: string, readonly throwOnHead = false) { super() }
  writeHead (status: number, headers: string[]): this {
    if (this.throwOnHead) throw new TypeError('invalid header value')
    this.statusCode = status
    this.head = { status, headers }
    this.log.push(`write ${this.name}`)
    return this
  }

  end (body: string): this { this.body = body; return this }
  destroy (): this { this.destroyed = true; return this }
}

interface Entry extends Pending { name: string }

function entry (log: string[], name: string, opts: { throwOnHead?: boolean, status?: number } = {}): Entry {
  return { res: new FakeResponse(log, name, opts.throwOnHead) as never, status: opts.status ?? 200, headers: ['content-type', 'application/json'], body: `{"n":"${name}"}`, name }
}

const turn = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))

t.test('the responses of one turn are written together at its end, in order, each then booked once', async (t) => {
  const log: string[] = []
  const batch = new ResponseBatch<Entry>((e, err) => { log.push(`booked ${e.name}${err === undefined ? '' : ' with error'}`) })
  const a = entry(log, 'a')
  const b = entry(log, 'b', { status: 429 })
  batch.add(a)
  batch.add(b)
  t.equal(batch.size, 2)
  t.same(log, [], 'nothing is written while the turn goes on')
  await turn()
  t.same(log, ['write a', 'write b', 'booked a', 'booked b'], 'the writes back to back, then the books')
  t.equal(batch.size, 0)
  const res = b.res as unknown as FakeResponse
  t.same(res.head, { status: 429, headers: ['content-type', 'application/json'] })
  t.equal(res.body, '{"n":"b"}')
  // The next turn's responses go out in the next run (the queue was reused, not lost).
  batch.add(entry(log, 'c'))
  await turn()
  t.same(log.slice(4), ['write c', 'booked c'])
  await turn()
  t.equal(log.length, 6, 'booked once: a later turn writes nothing again')
})

t.test('a response added while the batch is written goes out in the next run', async (t) => {
  const log: string[] = []
  let added = false
  const batch = new ResponseBatch<Entry>((e) => {
    log.push(`booked ${e.name}`)
    if (!added) { added = true; batch.add(entry(log, 'late')) }
  })
  batch.add(entry(log, 'a'))
  await turn()
  t.same(log, ['write a', 'booked a'])
  t.equal(batch.size, 1)
  await turn()
  t.same(log, ['write a', 'booked a', 'write late', 'booked late'])
})

t.test('a destroyed response is not written but still booked; a failing write destroys its response and spares the rest', async (t) => {
  const log: string[] = []
  const errors: string[] = []
  const batch = new ResponseBatch<Entry>((e, err) => {
    log.push(`booked ${e.name}`)
    if (err !== undefined) errors.push(`${e.name}: ${err.message}`)
  })
  const gone = entry(log, 'gone', { status: 503 })
  ;(gone.res as unknown as FakeResponse).destroyed = true
  const bad = entry(log, 'bad', { throwOnHead: true })
  batch.add(gone)
  batch.add(bad)
  batch.add(entry(log, 'fine'))
  await turn()
  t.same(log, ['write fine', 'booked gone', 'booked bad', 'booked fine'])
  t.equal((gone.res as unknown as FakeResponse).statusCode, 503, 'the books record the status it was to have')
  t.ok((bad.res as unknown as FakeResponse).destroyed, 'the connection of a response that failed to be written is closed')
  t.same(errors, ['bad: invalid header value'])
})

t.test('a throwing booking costs the other entries nothing, and is rethrown after them', async (t) => {
  const log: string[] = []
  const batch = new ResponseBatch<Entry>((e) => {
    log.push(`booked ${e.name}`)
    if (e.name === 'a') throw new Error('booking failed')
  })
  batch.add(entry(log, 'a'))
  batch.add(entry(log, 'b'))
  t.throws(() => { batch.flush() }, { message: 'booking failed' })
  t.same(log, ['write a', 'write b', 'booked a', 'booked b'])
  t.equal(batch.size, 0)
  await turn() // the scheduled run finds nothing left
  t.equal(log.length, 4)
})

t.test('each entry is booked with the time of its own write, not of its booking', async (t) => {
  const log: string[] = []
  let tick = 0
  const clock = (): number => { log.push(`clock ${++tick}`); return tick }
  const at: number[] = []
  const batch = new ResponseBatch<Entry>((e, _err, time) => { at.push(time); log.push(`booked ${e.name}`) }, clock)
  // More entries than the batch's first table of times holds.
  for (let i = 0; i < 70; i++) batch.add(entry(log, `e${i}`))
  await turn()
  t.same(at, Array.from({ length: 70 }, (_, i) => i + 1), 'the clock read right after each write, in order')
  t.same(log.slice(0, 4), ['write e0', 'clock 1', 'write e1', 'clock 2'])
  t.equal(log.indexOf('booked e0'), 140, 'booked after all 70 writes')
  batch.add(entry(log, 'again'))
  await turn()
  t.same(at.slice(70), [71], 'the next run starts its times afresh')
})
