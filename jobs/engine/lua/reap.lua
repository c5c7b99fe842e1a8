-- Release one job of a dead worker so a live worker takes it at once (back in the fair
-- queue, due now); a job whose runs keep killing their worker (the crash cap, or its last
-- attempt) fails for good. A worker that stops cleanly releases what it still holds the
-- same way, without counting a crash.
-- KEYS: record, attempts, waiting, running, active, dlq, dlq_open, worker_jobs, arq_job, arq_retry, arq_abort, arq_queue, outbox, stats, unfinished, queue, ring, sleep, turn, backlog, fair_running
-- ARGV: id, dead_worker, now_ms, crash_cap, retention_s, dead_letter, to_outbox, wake_channel, crashed, bucket
local id, dead, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SREM', KEYS[8], id)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= dead then
  return 'skipped'
end
local account = redis.call('HGET', KEYS[1], 'account')
redis.call('ZREM', KEYS[21], account .. '|' .. id)
redis.call('ZREM', KEYS[4], id)
redis.call('HSET', KEYS[1], 'updated_at', now)

local function release(outcome, undo)
  local last = redis.call('LINDEX', KEYS[2], -1)
  if last then
    local entry = cjson.decode(last)
    entry['outcome'] = outcome
    entry['finished_at'] = now
    if outcome == 'crashed' then
      entry['error'] = {type = 'worker_crashed', message = 'the worker ' .. dead .. ' died during this attempt', retryable = true}
    end
    redis.call('LSET', KEYS[2], -1, cjson.encode(entry))
  end
  if undo then
    redis.call('HINCRBY', KEYS[1], 'attempt', -1)
  end
  local kind = redis.call('HGET', KEYS[1], 'kind')
  local member = fair_insert(KEYS[16], KEYS[17], KEYS[18], KEYS[19], KEYS[20], kind, ARGV[10], now, now, account, id)
  redis.call('HSET', KEYS[1], 'state', 'queued', 'next_attempt_at', '', 'qm', member)
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('ZADD', KEYS[12], now, id)
  redis.call('PUBLISH', KEYS[1], 'queued')
  -- Wake the idle workers now rather than at their next poll.
  redis.call('PUBLISH', ARGV[8], '')
  return 'released'
end

if ARGV[9] ~= '1' then
  return release('interrupted', true)
end
local crashes = redis.call('HINCRBY', KEYS[1], 'crashes', 1)
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts'))
local cap = tonumber(ARGV[4])
if crashes < cap and attempt < max_attempts then
  return release('crashed', false)
end
local last = redis.call('LINDEX', KEYS[2], -1)
if last then
  local entry = cjson.decode(last)
  entry['outcome'] = 'crashed'
  entry['finished_at'] = now
  entry['error'] = {type = 'worker_crashed', message = 'the worker ' .. dead .. ' died during this attempt', retryable = true}
  redis.call('LSET', KEYS[2], -1, cjson.encode(entry))
end
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
redis.call('ZREM', KEYS[15], id)
redis.call('DEL', KEYS[9], KEYS[10])
-- A cancel that came while it ran left arq's abort marker, which arq never clears.
redis.call('ZREM', KEYS[11], id)
redis.call('ZREM', KEYS[12], id)
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
  redis.call('RPUSH', KEYS[13], id)
end
redis.call('HINCRBY', KEYS[14], 'failed', 1)
redis.call('EXPIRE', KEYS[14], 7200)
return 'dead'
