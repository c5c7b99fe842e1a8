-- Start a claimed job's next attempt (the attempt number is the record's) and return the
-- record. A job that ended meanwhile, or that its client cancelled before it started,
-- is returned as it is (the caller records the cancel); one that another live worker
-- runs answers 'busy'.
-- `run_token` is fresh for each start a worker makes: when redis-py sends the command
-- again because the answer to the first was lost (the connection dropped after Redis ran
-- it), the record already carries that token and the start is not made twice.
-- KEYS: record, attempts, waiting, running, workers, worker_jobs, claimed, fair_running
-- ARGV: id, now_ms, worker, lease_ms, retention_s, run_token
redis.call('ZREM', KEYS[7], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false  -- its place in fair_running goes with the reconciler's sweep
end
local claim = redis.call('HGET', KEYS[1], 'account') .. '|' .. ARGV[1]
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  redis.call('ZREM', KEYS[8], claim)
  return redis.call('HGETALL', KEYS[1])
end
local now = tonumber(ARGV[2])
if state == 'running' then
  if redis.call('HGET', KEYS[1], 'run_token') == ARGV[6] then
    return redis.call('HGETALL', KEYS[1])  -- this very start, sent again
  end
  local owner = redis.call('HGET', KEYS[1], 'worker')
  if owner and owner ~= ARGV[3] then
    local beat = redis.call('ZSCORE', KEYS[5], owner)
    if beat and tonumber(beat) * 1000 >= now - tonumber(ARGV[4]) then
      return {'busy', owner}
    end
  end
elseif redis.call('HEXISTS', KEYS[1], 'cancel_requested_at') == 1 then
  return redis.call('HGETALL', KEYS[1])
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', now, 'worker', ARGV[3],
  'next_attempt_at', '', 'stage', '', 'qm', '', 'run_token', ARGV[6])
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', now)
end
redis.call('RPUSH', KEYS[2], cjson.encode({attempt = attempt, started_at = now, worker = ARGV[3]}))
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('PUBLISH', KEYS[1], 'running')
return redis.call('HGETALL', KEYS[1])
