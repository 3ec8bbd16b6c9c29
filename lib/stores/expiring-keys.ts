/**
 * Keys with an expiry time (the memory store's single-use keys), swept in time proportional to what
 * has expired rather than to what is live, which grows with rate × lifetime
 * (docs/decisions/signature-cost.md).
 */
export class ExpiringKeys {
  readonly #expiry = new Map<string, number>()
  /**
   * The keys by the second their expiry falls in. A key set again is listed under each second it was
   * given; a sweep deletes a key only if its current expiry has passed.
   */
  readonly #bySecond = new Map<number, string[]>()
  /** The whole second of the last sweep: another sweep within it would find nothing new to drop. */
  #sweptSecond = Number.NaN

  /** Keys held, expired ones not yet swept included. */
  get size (): number { return this.#expiry.size }

  /** The expiry (ms) of `key`, or undefined. */
  get (key: string): number | undefined { return this.#expiry.get(key) }

  set (key: string, expiresAt: number): void {
    this.#expiry.set(key, expiresAt)
    const second = Math.ceil(expiresAt / 1000)
    const keys = this.#bySecond.get(second)
    if (keys === undefined) this.#bySecond.set(second, [key])
    else keys.push(key)
  }

  /**
   * Drop the keys expired at `now` (each at most a second after its expiry); returns how many listed
   * keys it looked at: those of the seconds that have passed, never the live ones. At most one walk
   * of the seconds per whole second, however often it is asked (a full store asks on each refusal).
   */
  sweep (now: number): number {
    const whole = Math.floor(now / 1000)
    if (whole === this.#sweptSecond) return 0
    this.#sweptSecond = whole
    let looked = 0
    for (const [second, keys] of this.#bySecond) {
      if (second * 1000 > now) continue
      looked += keys.length
      for (const k of keys) {
        const e = this.#expiry.get(k)
        if (e !== undefined && e <= now) this.#expiry.delete(k)
      }
      this.#bySecond.delete(second)
    }
    return looked
  }
}
