import t from 'tap'
import { Histogram, Registry } from 'prom-client'
import { FastHistogram } from '../../lib/histogram.js'

const buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
type L = 'route' | 'method' | 'status'

function pair (defaultLabels?: Record<string, string>): { slow: Histogram<L>, fast: FastHistogram<L>, a: Registry, b: Registry } {
  const a = new Registry()
  const b = new Registry()
  if (defaultLabels !== undefined) { a.setDefaultLabels(defaultLabels); b.setDefaultLabels(defaultLabels) }
  const opts = { name: 'aog_http_request_duration_seconds', help: 'Gate request duration by route, method and status.', labelNames: ['route', 'method', 'status'] as L[], buckets }
  return { slow: new Histogram({ ...opts, registers: [a] }), fast: new FastHistogram({ ...opts, registers: [b] }), a, b }
}

/** Each exposition line with its labels sorted. */
function normalise (text: string): string[] {
  return text.split('\n').map((line) => {
    const m = /^([^{ ]+)\{(.*)\} (.*)$/.exec(line)
    if (m === null) return line
    const labels = m[2]!.match(/[a-z_]+="(?:[^"\\]|\\.)*"/g) ?? []
    return `${m[1]}{${[...labels].sort().join(',')}} ${m[3]}`
  })
}

t.test('the exposition is byte for byte prom-client\'s for the same observations', async (t) => {
  for (const defaults of [undefined, { instance: 'gate-1' }]) {
    const { slow, fast, a, b } = pair(defaults)
    const series: Array<Record<L, string>> = [
      { route: '/challenge', method: 'GET', status: '200' },
      { route: '/task', method: 'POST', status: '409' },
      { route: '/task', method: 'GET', status: '409' },
      { route: '/task', method: 'POST', status: '200' },
      { route: 'un"match\\ed\n', method: 'M-SEARCH', status: '503' },
    ]
    let seed = 11
    for (let i = 0; i < 5000; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648
      const labels = series[i % series.length]!
      // Values on every bound (le is inclusive), between bounds, zero and above the last bound.
      const v = i % 7 === 0 ? buckets[i % buckets.length]! : i % 11 === 0 ? 0 : i % 13 === 0 ? 7.5 : (seed / 2147483648) * 3
      slow.observe(labels, v)
      fast.observe(labels, v)
    }
    if (defaults === undefined) {
      t.equal(await b.metrics(), await a.metrics(), 'same text')
    } else {
      // Registry default labels land elsewhere in the label list (order carries no meaning in the
      // exposition format); the same lines once each line's labels are sorted.
      t.same(normalise(await b.metrics()), normalise(await a.metrics()), 'same lines with default labels')
    }
  }
})

t.test('an empty histogram shows no series, as prom-client\'s labelled one does', async (t) => {
  const { a, b } = pair()
  t.equal(await b.metrics(), await a.metrics())
})

t.test('reset zeroes every series; bad values and missing labels are refused', async (t) => {
  const { fast, b } = pair()
  const labels = { route: '/challenge', method: 'GET', status: '200' }
  fast.observe(labels, 0.003)
  fast.observe(labels, 0.2)
  t.match(await b.metrics(), /aog_http_request_duration_seconds_count\{route="\/challenge",method="GET",status="200"\} 2/)
  b.resetMetrics()
  t.match(await b.metrics(), /aog_http_request_duration_seconds_count\{route="\/challenge",method="GET",status="200"\} 0/)
  fast.observe(labels, 0.001)
  t.match(await b.metrics(), /_bucket\{le="0.001",route="\/challenge",method="GET",status="200"\} 1/, 'a series counts again after a reset')
  t.throws(() => { fast.observe(labels, Number.NaN) }, TypeError)
  t.throws(() => { fast.observe(labels, Infinity) }, TypeError)
  t.throws(() => { fast.observe({ route: '/x', method: 'GET' } as unknown as Record<L, string>, 1) }, /label status missing/)
  t.throws(() => { fast.observe({ route: '/x', method: 'GET', status: 200 } as unknown as Record<L, string>, 1) }, /label status missing/)
  t.match(await b.metrics(), /_count\{route="\/challenge",method="GET",status="200"\} 1\n/, 'refused observations counted nowhere')
  t.notMatch(await b.metrics(), /route="\/x"/, 'no series made for refused labels')
})
