-- Shared token-bucket step and single-use keys, for the scripts that include it with
-- `--- @include "includes/bucket"` (not a script of its own). Time comes from the server: redis.call('TIME').
--
-- take_token(bucket_key, burst, per_second, now_ms) -> admitted (bool), remaining, reset_ms, retry_ms
-- peek_token(bucket_key, burst, per_second, now_ms) -> remaining, reset_ms, retry_ms (writes nothing)
-- admit(bucket_key, burst, per_second, once_key, once_ttl_ms, now_ms)
--   -> ADMITTED | LIMITED | REPLAYED, remaining, reset_ms, retry_ms
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

-- The tokens in the bucket at `now`, refilled since its last update.
local function bucket_level(key, burst, per_second, now)
  local b = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(b[1]) or burst
  local last = tonumber(b[2]) or now
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  return math.min(burst, tokens + elapsed * per_second / 1000)
end

local function peek_token(key, burst, per_second, now)
  local tokens = bucket_level(key, burst, per_second, now)
  local retry_ms = 0
  if tokens < 1 then retry_ms = math.ceil((1 - tokens) * 1000 / per_second) end
  return math.floor(tokens), math.ceil((burst - tokens) * 1000 / per_second), retry_ms
end

local function take_token(key, burst, per_second, now)
  local tokens = bucket_level(key, burst, per_second, now)
  local admitted = tokens >= 1
  if admitted then tokens = tokens - 1 end
  local reset_ms = math.ceil((burst - tokens) * 1000 / per_second)
  local retry_ms = 0
  if not admitted then retry_ms = math.ceil((1 - tokens) * 1000 / per_second) end
  redis.call('HSET', key, 't', string.format('%.6f', tokens), 'ts', ms(now))
  redis.call('PEXPIRE', key, reset_ms + 1000)
  return admitted, math.floor(tokens), reset_ms, retry_ms
end

-- A single-use key (a forwarded request id, a signature's keyid + nonce, an attestation's jti;
-- none when ttl_ms is 0): seen within its window (reads only), and recorded for it.
local function once_seen(key, ttl_ms)
  return ttl_ms > 0 and redis.call('EXISTS', key) == 1
end

local function once_record(key, ttl_ms)
  if ttl_ms > 0 then redis.call('SET', key, '1', 'PX', ttl_ms) end
end

local ADMITTED, LIMITED, REPLAYED = 0, 1, 2

-- The step every script with a bucket starts with (lib/stores/store.ts, OnceKey), in this order:
-- a once-key already seen is a replay, answered with the bucket as it stands, no token taken and
-- nothing written (whoever replays a captured signature must not drain its identity's bucket);
-- then a token, whose refusal records no once-key (refused fresh keys hold no memory); only an
-- admitted request records the key.
local function admit(bucket_key, burst, per_second, once_key, once_ttl, now)
  if once_seen(once_key, once_ttl) then return REPLAYED, peek_token(bucket_key, burst, per_second, now) end
  local ok, remaining, reset_ms, retry_ms = take_token(bucket_key, burst, per_second, now)
  if not ok then return LIMITED, remaining, reset_ms, retry_ms end
  once_record(once_key, once_ttl)
  return ADMITTED, remaining, reset_ms, retry_ms
end
