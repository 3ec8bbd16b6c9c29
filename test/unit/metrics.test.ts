import t from 'tap'
import { createMetrics } from '../../lib/metrics.js'

t.test('challenges counted on the request path reach aog_challenges_issued_total once each, scrape after scrape', async (t) => {
  const m = createMetrics({ defaults: false })
  const line = async (): Promise<string | undefined> => (await m.registry.metrics()).split('\n').find((l) => l.startsWith('aog_challenges_issued_total{'))
  t.equal(await line(), undefined, 'nothing issued: no series')
  const memory = m.issuedCount('memory')
  t.equal(m.issuedCount('memory'), memory, 'one count per store')
  memory.inc(); memory.inc(); memory.inc()
  t.equal(await line(), 'aog_challenges_issued_total{store="memory"} 3')
  t.equal(await line(), 'aog_challenges_issued_total{store="memory"} 3', 'a second scrape adds nothing')
  memory.inc(); memory.inc()
  t.equal(await line(), 'aog_challenges_issued_total{store="memory"} 5')
  const redis = m.issuedCount('redis')
  redis.inc()
  const text = await m.registry.metrics()
  t.match(text, /^aog_challenges_issued_total\{store="redis"\} 1$/m)
  t.match(text, /^aog_challenges_issued_total\{store="memory"\} 5$/m)
  t.same((await m.challengesIssued.get()).values.map((v) => v.value).sort(), [1, 5], 'get() collects too')
})
