-- Record what an attempt says about its endpoint, only while the endpoint exists (an
-- endpoint deleted while an attempt was in flight must not come back as a partial hash).
-- KEYS: endpoint, disabled_total
-- ARGV: outcome, now_ms, reason
-- outcome 'ok' clears `failing_since`; 'failing' sets it unless set; 'disable' disables.
-- Returns the endpoint's failing_since (ms), 0 when healthy, or -1 when it is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if ARGV[1] == 'ok' then
  redis.call('HDEL', KEYS[1], 'failing_since')
  return 0
end
if ARGV[1] == 'disable' then
  if redis.call('HSETNX', KEYS[1], 'disabled_at', ARGV[2]) == 1 then
    redis.call('HSET', KEYS[1], 'disabled_reason', ARGV[3])
    redis.call('INCR', KEYS[2])
  end
  return tonumber(redis.call('HGET', KEYS[1], 'failing_since') or '0')
end
redis.call('HSETNX', KEYS[1], 'failing_since', ARGV[2])
return tonumber(redis.call('HGET', KEYS[1], 'failing_since'))
