-- Release one job of a dead worker so a live worker takes it at once; a job whose runs
-- keep killing their worker (the crash cap, or its last try) becomes a dead letter.
-- KEYS: 1 record, 2 attempts, 3 waiting(kind), 4 running(kind), 5 active, 6 dead letters,
--       7 open dead letters, 8 arq job, 9 arq in-progress, 10 arq retry counter,
--       11 arq queue, 12 dead worker's jobs
-- ARGV: 1 id, 2 dead worker id, 3 now ms, 4 crash cap, 5 retention s
local id, dead, now = ARGV[1], ARGV[2], ARGV[3]
redis.call('SREM', KEYS[12], id)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= dead then
  return 'skipped'
end
local crashes = redis.call('HINCRBY', KEYS[1], 'crashes', 1)
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts'))
local last = redis.call('LINDEX', KEYS[2], -1)
if last then
  local entry = cjson.decode(last)
  entry['outcome'] = 'crashed'
  entry['finished_at'] = tonumber(now)
  entry['error'] = {type = 'worker_crashed', message = 'the worker ' .. dead .. ' died during this attempt', retryable = true}
  redis.call('LSET', KEYS[2], -1, cjson.encode(entry))
end
redis.call('ZREM', KEYS[4], id)
redis.call('HSET', KEYS[1], 'updated_at', now)
if crashes >= tonumber(ARGV[4]) or attempt >= max_attempts then
  local why
  if crashes >= tonumber(ARGV[4]) then
    why = 'its worker died during ' .. crashes .. ' runs in a row (crash cap ' .. ARGV[4] .. '): it may be killing its workers'
  else
    why = 'its worker died during its last attempt (' .. attempt .. ' of ' .. max_attempts .. ')'
  end
  local error = cjson.encode({type = 'worker_crashed', message = why, retryable = false})
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', error, 'finished_at', now, 'next_attempt_at', '')
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('ZADD', KEYS[7], now, id)
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('DEL', KEYS[8], KEYS[9], KEYS[10])
  redis.call('ZREM', KEYS[11], id)
  -- A cancel that came while it ran left arq's abort marker, which arq never clears.
  redis.call('ZREM', 'arq:abort', id)
  redis.call('PUBLISH', KEYS[1], 'failed')
  redis.call('RPUSH', 'lr:outbox', id)
  local minute = 'lr:stats:' .. math.floor(tonumber(now) / 60000)
  redis.call('HINCRBY', minute, 'failed', 1)
  redis.call('EXPIRE', minute, 7200)
  return 'dead'
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'next_attempt_at', '')
redis.call('ZADD', KEYS[3], now, id)
redis.call('DEL', KEYS[9])
redis.call('PUBLISH', KEYS[1], 'queued')
-- Wake the idle workers now rather than at their next poll (jobs/wakeup.py).
redis.call('PUBLISH', 'lr:wake:' .. KEYS[11], '')
return 'released'
