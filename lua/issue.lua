-- issue: take a token from the identity's bucket, then create the challenge.
--- @keys 3
--- @include "includes/bucket"
-- KEYS[1] bucket    aog:{F}:b          ({F}: the fingerprint, base64url, as the Cluster hash tag)
-- KEYS[2] challenge aog:{F}:c:<nonce>
-- KEYS[3] once      aog:{F}:o:<id>     (ignored when ARGV[8] is 0)
-- ARGV[1] burst  ARGV[2] tokens per second  ARGV[3] seed (base64url)  ARGV[4] iterations
-- ARGV[5] checkpoint interval  ARGV[6] deadline ms  ARGV[7] grace ms  ARGV[8] once ttl ms
-- Reply: { status, remaining, reset_ms, retry_ms, issued_at, deadline }
--   status 0 OK, 1 RATE_LIMITED, 3 REPLAYED (IssueStatus in lib/stores/store.ts)
-- The challenge is one string "<state><issued at, 13 digits><deadline - issued at>:<iterations>:
-- <checkpoints m = iterations / interval>:<seed, base64url>", state '0' live | '1' consumed | '2' passed (rewritten in place with
-- SETRANGE, which keeps the TTL); it lives until deadline + grace. One string rather than a hash
-- keeps a record small (docs/decisions/redis-record-format.md).
-- A replay takes no token; a 429 records no once-key (admit, includes/bucket).
local now = now_ms()
local verdict, remaining, reset_ms, retry_ms = admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[3], tonumber(ARGV[8]), now)
if verdict == REPLAYED then return { 3, remaining, reset_ms, retry_ms, 0, 0 } end
if verdict == LIMITED then return { 1, remaining, reset_ms, retry_ms, 0, 0 } end
local deadline = now + tonumber(ARGV[6])
local m = string.format('%.0f', tonumber(ARGV[4]) / tonumber(ARGV[5]))
local record = '0' .. ms(now) .. ARGV[6] .. ':' .. ARGV[4] .. ':' .. m .. ':' .. ARGV[3]
redis.call('SET', KEYS[2], record, 'PX', tonumber(ARGV[6]) + tonumber(ARGV[7]))
-- Millisecond timestamps are returned as decimal strings: exact whatever the client's integer width.
return { 0, remaining, reset_ms, retry_ms, ms(now), ms(deadline) }
