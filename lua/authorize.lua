-- authorize: a protected request (docs/protocol.md section 7): take a token from the identity's
-- upstream bucket, then check its grant and count the request against it, in one step.
--- @keys 3
--- @include "includes/bucket"
-- KEYS[1] upstream bucket aog:{F}:u
-- KEYS[2] grant           aog:{F}:g   (bind.lua)
-- KEYS[3] once            aog:{F}:o:<id>  (ignored when ARGV[3] is 0)
-- ARGV[1] burst  ARGV[2] tokens per second  ARGV[3] once ttl ms
-- Reply: { status, remaining, reset_ms, retry_ms, grant expiry ms, requests left (-1: unlimited) }
--   status 0 OK, 1 RATE_LIMITED, 2 NO_GRANT (missing, expired or used up), 3 REPLAYED
--   (AuthorizeStatus in lib/stores/store.ts); the grant only for 0.
-- A replay takes no token; a 429 records no once-key (admit, includes/bucket).
local now = now_ms()
local verdict, remaining, reset_ms, retry_ms = admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), KEYS[3], tonumber(ARGV[3]), now)
if verdict == REPLAYED then return { 3, remaining, reset_ms, retry_ms } end
if verdict == LIMITED then return { 1, remaining, reset_ms, retry_ms } end
local g = redis.call('HMGET', KEYS[2], 'e', 'n')
local expiry = tonumber(g[1])
local left = tonumber(g[2])
if expiry == nil or left == nil or expiry <= now or left == 0 then return { 2, remaining, reset_ms, retry_ms } end
if left > 0 then
  left = left - 1
  redis.call('HSET', KEYS[2], 'n', left)
end
return { 0, remaining, reset_ms, retry_ms, ms(expiry), left }
