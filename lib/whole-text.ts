/**
 * A whole number as `String(n)` writes it, without V8's double-to-text for numbers past 32 bits
 * (epoch milliseconds: three per GET /challenge, about twice as fast; docs/decisions/request-path-caches.md).
 */
export function wholeText (n: number): string {
  if (n >= 1e9 && n < 9e15 && Number.isInteger(n)) {
    const high = Math.floor(n / 1e9)
    return `${high}${`${n - high * 1e9 + 1e9}`.slice(1)}`
  }
  return `${n}`
}
