-- Run a job once more, now: a waiting one (queued or retrying) is made due at once and
-- keeps its schedule; one that ended gets one more attempt. A running or claimed job is
-- left alone.
-- KEYS: record, active, waiting, arq_job, arq_queue, claimed, queue, ring, sleep, turn, backlog
-- ARGV: id, now_ms, arq_payload, arq_ttl_ms, retention_s, wake_channel, bucket
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
local id, now = ARGV[1], tonumber(ARGV[2])
if state == 'running' or redis.call('ZSCORE', KEYS[6], id) then
  return 'running'
end
local account = redis.call('HGET', KEYS[1], 'account')
local answer = 'due'
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
  local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
  redis.call('HSET', KEYS[1], 'state', 'queued', 'finished_at', '', 'max_attempts', attempt + 1)
  redis.call('HDEL', KEYS[1], 'cancel_requested_at')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
  answer = 'reopened'
else
  fair_remove(KEYS[7], KEYS[11], redis.call('HGET', KEYS[1], 'qm'), account)
end
local kind = redis.call('HGET', KEYS[1], 'kind')
local member = fair_insert(KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], kind, ARGV[7], now, now, account, id)
redis.call('HSET', KEYS[1], 'next_attempt_at', '', 'updated_at', now, 'qm', member)
redis.call('ZADD', KEYS[3], now, id)
redis.call('ZADD', KEYS[5], now, id)
redis.call('PUBLISH', KEYS[1], 'queued')
redis.call('PUBLISH', ARGV[6], '')
return answer
