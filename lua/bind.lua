-- bind: record a verified pass for the identity.
--- @keys 2
-- KEYS[1] challenge aog:{F}:c:<nonce>
-- KEYS[2] passes    aog:{F}:p
-- Reply: the identity's pass count while its record lives (an integer).
-- The pass counter lives as long as the longest-lived record it counted.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SETRANGE', KEYS[1], 0, '2') else ttl = 1000 end
local passes = redis.call('INCR', KEYS[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return passes
