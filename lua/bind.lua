-- bind: record a verified pass for the identity and grant it access (docs/protocol.md section 7),
-- unless the attestation's once-key (its jti, docs/protocol.md section 4 step 7) was seen before.
--- @keys 4
--- @include "includes/bucket"
-- KEYS[1] challenge aog:{F}:c:<nonce>
-- KEYS[2] passes    aog:{F}:p
-- KEYS[3] grant     aog:{F}:g   hash {e = expiry ms, n = requests left, -1 unlimited}
-- KEYS[4] once      aog:{F}:o:<id> (aog:{F}:o with ttl 0 when there is none)
-- ARGV[1] grant ttl ms  ARGV[2] grant max requests (0: unlimited)  ARGV[3] once ttl ms (0: none)
-- Reply: { 0, passes, grant expiry ms (decimal string), requests left (-1: unlimited) }, or { 1 }
-- when the once-key was already seen: then nothing else is written (no pass, no grant).
-- The pass counter lives as long as the longest-lived record it counted; the grant until it expires.
if once_seen(KEYS[4], tonumber(ARGV[3])) then return { 1 } end
once_record(KEYS[4], tonumber(ARGV[3]))
local now = now_ms()
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SETRANGE', KEYS[1], 0, '2') else ttl = 1000 end
local passes = redis.call('INCR', KEYS[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
-- The later of the current expiry and now + ttl; a pass refills the request budget.
local expiry = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[3], 'e'))
if current ~= nil and current > expiry then expiry = current end
local left = tonumber(ARGV[2])
if left <= 0 then left = -1 end
redis.call('HSET', KEYS[3], 'e', ms(expiry), 'n', left)
redis.call('PEXPIRE', KEYS[3], ms(math.max(1, expiry - now)))
return { 0, passes, ms(expiry), left }
