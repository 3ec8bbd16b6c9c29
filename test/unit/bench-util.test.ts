/** The bench scripts' shared helpers (bench/util.ts): what their tables and headlines are made of. */
import t from 'tap'
import { cpuMs, machine, median, medianNsPerUnit, middleHalf, table } from '../../bench/util.js'

t.test('median and the middle half (nearest rank)', async (t) => {
  t.equal(median([3, 1, 2]), 2)
  t.equal(median([4, 1, 3, 2]), 2.5, 'an even count: the mean of the two middle values')
  t.equal(median([1.27, 0.92]), 1.095)
  const xs = [0.84, 0.95, 1.00, 0.87, 0.87, 0.97, 0.95, 0.92, 0.86, 0.51, 0.81, 0.84, 0.72, 0.90, 0.81]
  t.same(middleHalf(xs), [0.81, 0.95])
  t.same(middleHalf([5]), [5, 5])
  t.same(middleHalf([2, 1]), [1, 2])
  t.same(xs[0], 0.84, 'the input is not sorted in place')
})

t.test('table pads columns to their widest cell', async (t) => {
  t.equal(table([{ a: 'x', bb: 1 }, { a: 'yyy', bb: 22 }]), 'a    bb\n---  --\nx    1 \nyyy  22')
  t.equal(table([]), '\n')
})

t.test('machine, CPU time and the per-unit median', async (t) => {
  t.match(machine(), /^.+ x\d+, \d+ GiB, Node v\d+/)
  const before = cpuMs(process.pid)
  if (process.platform === 'linux') {
    t.type(before, 'number')
    let x = 0
    const end = Date.now() + 50
    while (Date.now() < end) x++
    t.ok(x > 0)
    t.ok(cpuMs(process.pid)! >= before!, 'CPU time does not go back')
  }
  t.equal(cpuMs(-1), undefined, 'no such process: undefined, not a throw')
  let calls = 0
  const ns = medianNsPerUnit(3, 10, () => { calls++ })
  t.equal(calls, 3)
  t.ok(ns >= 0)
})
