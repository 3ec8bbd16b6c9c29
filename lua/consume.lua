-- consume: take a token, then claim the nonce, marking it consumed in the same step.
-- KEYS[1] bucket    aog:{F}:b
-- KEYS[2] challenge aog:{F}:c:<nonce>  (another identity's nonce is another key: unknown, untouched)
-- KEYS[3] once      aog:{F}:o:<id>     (ignored when ARGV[3] is 0)
-- ARGV[1] burst  ARGV[2] tokens per second  ARGV[3] once ttl ms
-- Reply: { status, remaining, reset_ms, retry_ms, now, seed, iterations, interval, issued_at, deadline }
--   status 0 OK, 1 RATE_LIMITED, 2 UNKNOWN, 3 CONSUMED, 4 EXPIRED (consumed all the same),
--   5 REPLAYED (ConsumeStatus in lib/stores/store.ts); fields after retry_ms only for 0 and 4.
local now = now_ms()
local replay = seen_once(KEYS[3], tonumber(ARGV[3]))
local ok, remaining, reset_ms, retry_ms = take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if replay then return { 5, remaining, reset_ms, retry_ms } end
if not ok then return { 1, remaining, reset_ms, retry_ms } end
if redis.call('EXISTS', KEYS[2]) == 0 then return { 2, remaining, reset_ms, retry_ms } end
local c = redis.call('HMGET', KEYS[2], 'st', 's', 'n', 'k', 'i', 'd')
if tonumber(c[1]) ~= 0 then return { 3, remaining, reset_ms, retry_ms } end
redis.call('HSET', KEYS[2], 'st', 1)
local status = 0
if now > tonumber(c[6]) then status = 4 end
-- Millisecond timestamps are returned as decimal strings: exact whatever the client's integer width.
return { status, remaining, reset_ms, retry_ms, ms(now), c[2], tonumber(c[3]), tonumber(c[4]), c[5], c[6] }
