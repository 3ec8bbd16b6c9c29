/**
 * The request duration histogram, observed on every request. prom-client's Histogram builds a hash
 * string from the label object and turns the bucket bound into a property key (a double-to-text
 * conversion) on every observation, about a sixth of what the gate adds to a GET /challenge in
 * instructions (docs/decisions/request-path-caches.md); here a series is found through one Map per
 * label (values are the gate's own strings, their hashes cached) and an observation is a few
 * comparisons and additions into a Float64Array.
 *
 * It registers on a prom-client Registry through `get()`, the shape every prom-client metric
 * answers, so /metrics shows it exactly as a prom-client Histogram: a test compares the two.
 */
import type { Metric, MetricObjectWithValues, MetricType, MetricValueWithName, Registry } from 'prom-client'

class Series {
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor (readonly labels: Readonly<Record<string, string>>, readonly bounds: Float64Array) {
    this.counts = new Float64Array(bounds.length)
  }

  observe (value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`)
    const b = this.bounds
    let i = 0
    while (i < b.length && value > b[i]!) i++
    if (i < b.length) this.counts[i]!++ // above the last bound: counted in +Inf only
    this.sum += value
    this.count++
  }
}

export interface FastHistogramOptions<T extends string> {
  name: string
  help: string
  labelNames: readonly T[]
  buckets: readonly number[]
  registers: Registry[]
}

/** Label value → the next label's map, or (after the last label) the series. */
type Level = Map<string, Level | Series>

export class FastHistogram<T extends string> {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #labelNames: readonly T[]
  readonly #bounds: Float64Array
  readonly #root: Level = new Map()
  readonly #series: Series[] = []

  constructor (opts: FastHistogramOptions<T>) {
    if (opts.labelNames.length === 0) throw new Error(`${opts.name}: a FastHistogram needs at least one label`)
    this.name = opts.name
    this.help = opts.help
    this.#labelNames = opts.labelNames
    this.#bounds = Float64Array.from([...opts.buckets].sort((a, b) => a - b))
    for (const r of opts.registers) r.registerMetric(this as unknown as Metric)
  }

  observe (labels: Readonly<Record<T, string>>, value: number): void {
    const names = this.#labelNames
    let level = this.#root
    for (let i = 0; i < names.length; i++) {
      const v = labels[names[i]!]
      if (typeof v !== 'string') throw new TypeError(`label ${names[i]!} missing for ${this.name}`)
      let next = level.get(v)
      if (next === undefined) level.set(v, next = i === names.length - 1 ? this.#newSeries(labels) : new Map())
      if (next instanceof Series) { next.observe(value); return }
      level = next
    }
  }

  #newSeries (labels: Readonly<Record<T, string>>): Series {
    const own: Record<string, string> = {}
    for (const n of this.#labelNames) own[n] = labels[n]
    const s = new Series(own, this.#bounds)
    this.#series.push(s)
    return s
  }

  /** Zero every series (Registry.resetMetrics). */
  reset (): void {
    for (const s of this.#series) {
      s.counts.fill(0)
      s.sum = 0
      s.count = 0
    }
  }

  /** Cumulative buckets, +Inf, sum and count per series, as prom-client's Histogram reports them. */
  async get (): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: Array<MetricValueWithName<string>> = []
    const bucket = `${this.name}_bucket`
    for (const s of this.#series) {
      let acc = 0
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += s.counts[i]!
        values.push({ labels: { le: this.#bounds[i]!, ...s.labels }, value: acc, metricName: bucket })
      }
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: bucket })
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` })
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` })
    }
    // MetricType is a type-only enum in prom-client's declarations; its histogram member is this string.
    return { name: this.name, help: this.help, type: 'histogram' as unknown as MetricType, values, aggregator: this.aggregator, collect: () => {} }
  }
}
