-- Release one job of a dead worker so a live worker takes it at once; a job whose runs keep
-- killing their worker (the crash cap, or its last attempt) fails for good. A worker that
-- stops cleanly releases what it still holds the same way, without counting a crash.
-- KEYS: record, attempts, waiting, running, active, dlq, dlq_open, worker_jobs, arq_job, arq_in_progress, arq_retry, arq_abort, arq_queue, outbox, stats
-- ARGV: id, dead_worker, now_ms, crash_cap, retention_s, dead_letter, to_outbox, wake_channel, crashed
local id, dead, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SREM', KEYS[8], id)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= dead then
  return 'skipped'
end
if ARGV[9] ~= '1' then
  local last = redis.call('LINDEX', KEYS[2], -1)
  if last then
    local entry = cjson.decode(last)
    entry['outcome'] = 'interrupted'
    entry['finished_at'] = now
    redis.call('LSET', KEYS[2], -1, cjson.encode(entry))
  end
  redis.call('HINCRBY', KEYS[1], 'attempt', -1)
  redis.call('ZREM', KEYS[4], id)
  redis.call('DEL', KEYS[10])
  redis.call('HSET', KEYS[1], 'state', 'queued', 'next_attempt_at', '', 'updated_at', now)
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('ZADD', KEYS[13], now, id)
  redis.call('PUBLISH', KEYS[1], 'queued')
  redis.call('PUBLISH', ARGV[8], '')
  return 'released'
end
local crashes = redis.call('HINCRBY', KEYS[1], 'crashes', 1)
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts'))
local last = redis.call('LINDEX', KEYS[2], -1)
if last then
  local entry = cjson.decode(last)
  entry['outcome'] = 'crashed'
  entry['finished_at'] = now
  entry['error'] = {type = 'worker_crashed', message = 'the worker ' .. dead .. ' died during this attempt', retryable = true}
  redis.call('LSET', KEYS[2], -1, cjson.encode(entry))
end
redis.call('ZREM', KEYS[4], id)
redis.call('DEL', KEYS[10])
redis.call('HSET', KEYS[1], 'updated_at', now)
local cap = tonumber(ARGV[4])
if crashes >= cap or attempt >= max_attempts then
  local why
  if crashes >= cap then
    why = 'its worker died during ' .. crashes .. ' runs in a row (crash cap ' .. cap .. '): it may be killing its workers'
  else
    why = 'its worker died during its last attempt (' .. attempt .. ' of ' .. max_attempts .. ')'
  end
  local error = cjson.encode({type = 'worker_crashed', message = why, retryable = false})
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', error, 'finished_at', now, 'next_attempt_at', '')
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('DEL', KEYS[9], KEYS[11])
  -- A cancel that came while it ran left arq's abort marker, which arq never clears.
  redis.call('ZREM', KEYS[12], id)
  redis.call('ZREM', KEYS[13], id)
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[6], now, id)
    redis.call('ZADD', KEYS[7], now, id)
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  else
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    redis.call('EXPIRE', KEYS[2], ARGV[5])
  end
  redis.call('PUBLISH', KEYS[1], 'failed')
  if ARGV[7] == '1' then
    redis.call('RPUSH', KEYS[14], id)
  end
  redis.call('HINCRBY', KEYS[15], 'failed', 1)
  redis.call('EXPIRE', KEYS[15], 7200)
  return 'dead'
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'next_attempt_at', '')
redis.call('ZADD', KEYS[3], now, id)
redis.call('ZADD', KEYS[13], now, id)
redis.call('PUBLISH', KEYS[1], 'queued')
-- Wake the idle workers now rather than at their next poll.
redis.call('PUBLISH', ARGV[8], '')
return 'released'
