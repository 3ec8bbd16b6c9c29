/**
 * A histogram for the request path. prom-client's Histogram, even through a labelled child, builds
 * a hash string from the label object and turns the bucket bound into a property key (a
 * double-to-string conversion) on every observation: about 0.8 µs and 4,000 instructions per
 * request. Here a series is looked up once (labels()), and an observation is a few comparisons
 * and additions into a Float64Array.
 *
 * It registers on a prom-client Registry through `get()`, the shape every prom-client metric
 * answers (MetricObjectWithValues), so /metrics shows it exactly as it shows a prom-client
 * Histogram: a test compares the exposition text of the two for the same observations.
 */
import type { Metric, MetricObjectWithValues, MetricType, MetricValueWithName, Registry } from 'prom-client'

export interface Observer { observe: (value: number) => void }

class Series implements Observer {
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

export class FastHistogram<T extends string> {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #labelNames: readonly T[]
  readonly #bounds: Float64Array
  readonly #series = new Map<string, Series>()

  constructor (opts: FastHistogramOptions<T>) {
    this.name = opts.name
    this.help = opts.help
    this.#labelNames = opts.labelNames
    this.#bounds = Float64Array.from([...opts.buckets].sort((a, b) => a - b))
    for (const r of opts.registers) r.registerMetric(this as unknown as Metric)
  }

  /** The series for these labels (made on first use); keep it and call observe() on it. */
  labels (labels: Readonly<Record<T, string | number>>): Observer {
    const values = this.#labelNames.map((n) => {
      const v = labels[n]
      if (v === undefined) throw new Error(`label ${n} missing for ${this.name}`)
      return String(v)
    })
    const key = values.join('\u0000')
    let s = this.#series.get(key)
    if (s === undefined) {
      const own: Record<string, string> = {}
      this.#labelNames.forEach((n, i) => { own[n] = values[i]! })
      this.#series.set(key, s = new Series(own, this.#bounds))
    }
    return s
  }

  observe (labels: Readonly<Record<T, string | number>>, value: number): void {
    this.labels(labels).observe(value)
  }

  /** Zero every series (Registry.resetMetrics). */
  reset (): void {
    for (const s of this.#series.values()) {
      s.counts.fill(0)
      s.sum = 0
      s.count = 0
    }
  }

  /** Cumulative buckets, +Inf, sum and count per series, as prom-client's Histogram reports them. */
  async get (): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: Array<MetricValueWithName<string>> = []
    const bucket = `${this.name}_bucket`
    for (const s of this.#series.values()) {
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
