-- Cancel a job: a waiting one at once (out of the queue, its arq job removed, so it never
-- runs); one claimed by a worker is cancelled as it starts; a running one through arq's
-- abort, which its worker sees within a poll.
-- KEYS: record, attempts, waiting, active, arq_job, arq_retry, arq_abort, arq_queue, claimed, unfinished, queue, backlog
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
if state == 'running' or redis.call('ZSCORE', KEYS[9], id) then
  redis.call('ZADD', KEYS[7], now, id)
  redis.call('PUBLISH', KEYS[1], 'cancelling')
  return 'cancelling'
end
fair_remove(KEYS[11], KEYS[12], redis.call('HGET', KEYS[1], 'qm'), redis.call('HGET', KEYS[1], 'account'))
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', now, 'next_attempt_at', '', 'qm', '')
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[10], id)
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[8], id)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[1], 'cancelled')
return 'cancelled'
