-- Cancel a job: a queued or retrying one at once (its arq job removed, so it never runs);
-- a running one through arq's abort, which its worker sees within a poll.
-- KEYS: record, attempts, waiting, active, arq_job, arq_in_progress, arq_retry, arq_abort, arq_queue
-- ARGV: id, now_ms, retention_s
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  return 'ended:' .. state
end
local id, now = ARGV[1], ARGV[2]
redis.call('HSET', KEYS[1], 'cancel_requested_at', now, 'updated_at', now)
if state == 'running' or redis.call('EXISTS', KEYS[6]) == 1 then
  -- Running, or claimed by a worker this instant: its worker cancels it.
  redis.call('ZADD', KEYS[8], now, id)
  redis.call('PUBLISH', KEYS[1], 'cancelling')
  return 'cancelling'
end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', now, 'next_attempt_at', '')
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('DEL', KEYS[5], KEYS[7])
redis.call('ZREM', KEYS[9], id)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[1], 'cancelled')
return 'cancelled'
