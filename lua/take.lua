-- take: a bare token bucket (requests refused before a claim still cost a token).
--- @keys 2
--- @include "includes/bucket"
-- KEYS[1] bucket aog:{F}:b
-- KEYS[2] once   aog:{F}:o:<id>  (ignored when ARGV[3] is 0)
-- ARGV[1] burst  ARGV[2] tokens per second  ARGV[3] once ttl ms
-- Reply: { status, remaining, reset_ms, retry_ms }
--   status 0 OK, 1 RATE_LIMITED, 2 REPLAYED (TakeStatus in lib/stores/store.ts)
-- A replay takes no token; a 429 records no once-key (admit, includes/bucket).
local verdict, remaining, reset_ms, retry_ms = admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[2], tonumber(ARGV[3]), now_ms())
if verdict == REPLAYED then return { 2, remaining, reset_ms, retry_ms } end
if verdict == LIMITED then return { 1, remaining, reset_ms, retry_ms } end
return { 0, remaining, reset_ms, retry_ms }
