/** The bounded memo by text (lib/webbotauth/text-memo.ts): computed once per text, bounded, throws not kept. */
import t from 'tap'
import { textMemo } from '../../../lib/webbotauth/text-memo.js'

t.test('a text is computed once; a throw is not kept; texts an attacker chooses only churn it, never past its bound', async (t) => {
  const computed: string[] = []
  const memo = textMemo(3, (text: string) => {
    computed.push(text)
    if (text === 'bad') throw new Error('refused')
    return { text }
  })
  const a = memo('a')
  t.equal(memo('a'), a, 'the same value, shared')
  t.throws(() => memo('bad'), /refused/)
  t.throws(() => memo('bad'), /refused/)
  t.same(computed, ['a', 'bad', 'bad'], 'a throw is computed again')
  for (let i = 0; i < 1000; i++) memo(`x${i}`)
  t.equal(computed.length, 1003, 'each new text computed once')
  computed.length = 0
  memo('x999')
  t.same(computed, [], 'the last text is still kept')
  memo('a')
  t.same(computed, ['a'], 'the early text was dropped when the memo filled')
})
