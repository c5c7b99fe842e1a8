-- A rate limit as a generic cell rate algorithm: `rate` events a second, `burst` at once;
-- one key holds the theoretical arrival time of the next event. An event the limit
-- refuses changes nothing.
-- KEYS: tat
-- ARGV: now_ms, interval_ms, burst
-- Returns {allowed (1/0), remaining, reset_ms, retry_after_ms}.
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local next_tat = tat + interval
local allow_at = next_tat - burst * interval
if now < allow_at then
  local remaining = 0
  return {0, remaining, math.ceil(tat - now), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.max(1, math.ceil(next_tat - now)))
local remaining = math.floor((now - allow_at) / interval)
return {1, remaining, math.ceil(next_tat - now), 0}
