-- issue: take a token from the identity's bucket, then create the challenge.
-- KEYS[1] bucket    aog:{F}:b
-- KEYS[2] challenge aog:{F}:c:<nonce>
-- KEYS[3] once      aog:{F}:o:<id>   (ignored when ARGV[8] is 0)
-- ARGV[1] burst  ARGV[2] tokens per second  ARGV[3] seed (hex)  ARGV[4] iterations
-- ARGV[5] checkpoint interval  ARGV[6] deadline ms  ARGV[7] grace ms  ARGV[8] once ttl ms
-- Reply: { status, remaining, reset_ms, retry_ms, issued_at, deadline }
--   status 0 OK, 1 RATE_LIMITED, 3 REPLAYED (IssueStatus in lib/stores/store.ts)
-- The challenge is a hash {s = seed, n = iterations, k = interval, i = issued at, d = deadline,
-- st = 0 live | 1 consumed | 2 passed} living until deadline + grace.
local now = now_ms()
local replay = seen_once(KEYS[3], tonumber(ARGV[8]))
local ok, remaining, reset_ms, retry_ms = take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if replay then return { 3, remaining, reset_ms, retry_ms, 0, 0 } end
if not ok then return { 1, remaining, reset_ms, retry_ms, 0, 0 } end
local deadline = now + tonumber(ARGV[6])
redis.call('HSET', KEYS[2], 's', ARGV[3], 'n', ARGV[4], 'k', ARGV[5], 'i', ms(now), 'd', ms(deadline), 'st', 0)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]) + tonumber(ARGV[7]))
-- Millisecond timestamps are returned as decimal strings: exact whatever the client's integer width.
return { 0, remaining, reset_ms, retry_ms, ms(now), ms(deadline) }
