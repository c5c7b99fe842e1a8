-- Mark a job running for one attempt and return the record.
-- Refuses (and undoes arq's try count) when the record says another live worker runs it.
-- KEYS: 1 record, 2 attempts, 3 waiting(kind), 4 running(kind), 5 workers, 6 worker's jobs,
--       7 arq retry counter
-- ARGV: 1 id, 2 attempt, 3 now ms, 4 worker id, 5 attempt entry json, 6 retention s,
--       7 lease ms
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return redis.call('HGETALL', KEYS[1])
end
local now = tonumber(ARGV[3])
if state == 'running' then
  local owner = redis.call('HGET', KEYS[1], 'worker')
  if owner and owner ~= ARGV[4] then
    local beat = redis.call('ZSCORE', KEYS[5], owner)
    if beat and tonumber(beat) * 1000 >= now - tonumber(ARGV[7]) then
      redis.call('DECR', KEYS[7])
      return {'busy', owner}
    end
  end
end
redis.call('HSET', KEYS[1], 'state', 'running', 'attempt', ARGV[2], 'updated_at', now,
  'worker', ARGV[4], 'next_attempt_at', '', 'stage', '')
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', now)
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('PUBLISH', KEYS[1], 'running')
return redis.call('HGETALL', KEYS[1])
