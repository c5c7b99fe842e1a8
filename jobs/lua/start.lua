-- Mark a job running for one attempt and return the record.
-- KEYS: 1 record, 2 attempts, 3 waiting(kind), 4 running(kind)
-- ARGV: 1 id, 2 attempt, 3 now ms, 4 worker id, 5 attempt entry json, 6 retention s
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return redis.call('HGETALL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'state', 'running', 'attempt', ARGV[2], 'updated_at', ARGV[3],
  'worker', ARGV[4], 'next_attempt_at', '')
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[3])
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])
