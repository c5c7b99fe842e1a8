-- Run a job once more, now: a waiting one (queued or retrying) is made due at once and
-- keeps its schedule; one that ended gets one more attempt. A running job is left alone.
-- KEYS: record, active, waiting, arq_job, arq_queue
-- ARGV: id, now_ms, arq_payload, arq_ttl_ms, retention_s, wake_channel
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
if state == 'running' then
  return 'running'
end
local id, now = ARGV[1], tonumber(ARGV[2])
local answer = 'due'
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
  redis.call('HSET', KEYS[1], 'state', 'queued', 'finished_at', '', 'max_attempts', attempt + 1)
  redis.call('HDEL', KEYS[1], 'cancel_requested_at')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
  answer = 'reopened'
end
redis.call('HSET', KEYS[1], 'next_attempt_at', '', 'updated_at', now)
redis.call('ZADD', KEYS[3], now, id)
redis.call('ZADD', KEYS[5], now, id)
redis.call('PUBLISH', KEYS[1], 'queued')
redis.call('PUBLISH', ARGV[6], '')
return answer
