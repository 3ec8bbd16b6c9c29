-- consume: take a token, then claim the nonce, marking it consumed in the same step.
--- @keys 3
--- @include "includes/bucket"
-- KEYS[1] bucket    aog:{F}:b
-- KEYS[2] challenge aog:{F}:c:<nonce>  (another identity's nonce is another key: unknown, untouched)
-- KEYS[3] once      aog:{F}:o:<id>     (ignored when ARGV[3] is 0)
-- ARGV[1] burst  ARGV[2] tokens per second  ARGV[3] once ttl ms
-- Reply: { status, remaining, reset_ms, retry_ms, now, record }
--   status 0 OK, 1 RATE_LIMITED, 2 UNKNOWN, 3 CONSUMED, 4 EXPIRED (consumed all the same),
--   5 REPLAYED (ConsumeStatus in lib/stores/store.ts); now and record (as issue.lua wrote it, the
--   state byte already '1') only for 0 and 4.
-- A replay takes no token; a 429 records no once-key (admit, includes/bucket).
local now = now_ms()
local verdict, remaining, reset_ms, retry_ms = admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[3], tonumber(ARGV[3]), now)
if verdict == REPLAYED then return { 5, remaining, reset_ms, retry_ms } end
if verdict == LIMITED then return { 1, remaining, reset_ms, retry_ms } end
local record = redis.call('GET', KEYS[2])
if type(record) ~= 'string' then return { 2, remaining, reset_ms, retry_ms } end
if string.sub(record, 1, 1) ~= '0' then return { 3, remaining, reset_ms, retry_ms } end
redis.call('SETRANGE', KEYS[2], 0, '1')
local issued_at, offset = string.match(record, '^.(' .. string.rep('%d', 13) .. ')(%d+):')
local status = 0
if now > tonumber(issued_at) + tonumber(offset) then status = 4 end
-- The timestamp goes back as a decimal string: exact whatever the client's integer width.
return { status, remaining, reset_ms, retry_ms, ms(now), '1' .. string.sub(record, 2) }
