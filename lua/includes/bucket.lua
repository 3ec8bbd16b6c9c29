-- Shared token-bucket step and single-use keys, for the scripts that include it with
-- `--- @include "includes/bucket"` (not a script of its own). Time comes from the server: redis.call('TIME').
--
-- take_token(bucket_key, burst, per_second, now_ms) -> admitted (bool), remaining, reset_ms, retry_ms
-- The bucket is a hash {t = tokens, ts = last update ms}; it expires when it would be full again,
-- since a full bucket and no bucket are the same thing.
-- A millisecond timestamp as a decimal string (exact: doubles hold integers up to 2^53).
local function ms(n)
  return string.format('%.0f', n)
end

-- 1000.0 keeps the arithmetic in doubles even on a Lua whose integers are 32-bit (the VM of
-- ioredis-mock); on Redis (Lua 5.1) every number is a double anyway.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000.0 + math.floor(tonumber(t[2]) / 1000)
end

local function take_token(key, burst, per_second, now)
  local b = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(b[1]) or burst
  local last = tonumber(b[2]) or now
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(burst, tokens + elapsed * per_second / 1000)
  local admitted = tokens >= 1
  if admitted then tokens = tokens - 1 end
  local reset_ms = math.ceil((burst - tokens) * 1000 / per_second)
  local retry_ms = 0
  if not admitted then retry_ms = math.ceil((1 - tokens) * 1000 / per_second) end
  redis.call('HSET', key, 't', string.format('%.6f', tokens), 'ts', ms(now))
  redis.call('PEXPIRE', key, reset_ms + 1000)
  return admitted, math.floor(tokens), reset_ms, retry_ms
end

-- A single-use key (forwarded mode's request id): true when already seen within its window.
local function seen_once(key, ttl_ms)
  if ttl_ms <= 0 then return false end
  local fresh = redis.call('SET', key, '1', 'NX', 'PX', ttl_ms)
  return not fresh
end
