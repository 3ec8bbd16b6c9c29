/**
 * A bounded memo by text, for values every request of an agent repeats (its `Signature-Agent`, its
 * directory URL, the components its signatures cover): their parse is done once, not per request
 * (docs/decisions/signature-cost.md).
 * Texts an attacker chooses only churn it: at most `max` entries, all dropped when it is full. A
 * throw is not kept, and a kept value is shared, so it must not be changed by its users.
 */
export function textMemo<T> (max: number, compute: (text: string) => T): (text: string) => T {
  const memo = new Map<string, T>()
  return (text) => {
    let v = memo.get(text)
    if (v === undefined) {
      v = compute(text)
      if (memo.size >= max) memo.clear()
      memo.set(text, v)
    }
    return v
  }
}
