-- Record the outcome of an attempt: retrying or queued again (handed back: back in the
-- fair queue at its due time), or a final state, which also ends the arq job (arq's own
-- finish is skipped for our jobs). A failed job of a kind that keeps dead letters is kept
-- until it is replayed or purged.
-- KEYS: record, attempts, waiting, running, active, dlq, dlq_open, worker_jobs, arq_job, arq_retry, arq_abort, arq_queue, outbox, stats, unfinished, queue, ring, sleep, turn, backlog, fair_running
-- ARGV: id, state, now_ms, entry_json, retention_s, due_ms, guard, undo_attempt, to_outbox, dead_letter, wake_channel, bucket, drop_entry, *fields
-- guard: '' none; 'orphan': only when arq holds no job for it; 'waiting': only while no
-- worker runs it; otherwise the worker that must still own the run. entry_json ('' keeps
-- it) replaces the attempt's history entry; drop_entry '1' removes it instead (a job that
-- continues later: the run was a step, not an attempt).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local current = redis.call('HGET', KEYS[1], 'state')
if current == 'succeeded' or current == 'failed' or current == 'cancelled' then
  return 0
end
if ARGV[7] == 'orphan' then
  if redis.call('EXISTS', KEYS[9]) == 1 then
    return 0
  end
elseif ARGV[7] == 'waiting' then
  if current ~= 'queued' and current ~= 'retrying' then
    return 0
  end
elseif ARGV[7] ~= '' and (current ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[7]) then
  return 0
end
local id, state, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local account = redis.call('HGET', KEYS[1], 'account')
if state == 'retrying' and redis.call('HEXISTS', KEYS[1], 'cancel_requested_at') == 1 then
  state = 'cancelled'
end
local fields = {'state', state, 'updated_at', now}
for i = 14, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[13] == '1' then
  redis.call('RPOP', KEYS[2])
elseif ARGV[4] ~= '' and redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('LSET', KEYS[2], -1, ARGV[4])
end
redis.call('ZREM', KEYS[4], id)
redis.call('SREM', KEYS[8], id)
redis.call('ZREM', KEYS[21], account .. '|' .. id)
-- A job still waiting (the reconciler's orphan, a cancel before its start) leaves the queue.
fair_remove(KEYS[16], KEYS[20], redis.call('HGET', KEYS[1], 'qm'), account)
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[1], 'attempt', -1)
end
redis.call('PUBLISH', KEYS[1], state)
if state == 'retrying' or state == 'queued' then
  local due = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], due, id)
  redis.call('ZADD', KEYS[12], due, id)
  local kind = redis.call('HGET', KEYS[1], 'kind')
  local member = fair_insert(KEYS[16], KEYS[17], KEYS[18], KEYS[19], KEYS[20], kind, ARGV[12], due, now, account, id)
  redis.call('HSET', KEYS[1], 'qm', member)
  if due <= now then
    redis.call('PUBLISH', ARGV[11], '')
  end
  return 1
end
redis.call('HSET', KEYS[1], 'finished_at', now, 'next_attempt_at', '', 'qm', '')
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[11], id)
redis.call('ZREM', KEYS[12], id)
redis.call('ZREM', KEYS[15], id)
redis.call('DEL', KEYS[9], KEYS[10])
if ARGV[9] == '1' then
  -- The outbox: the engine's publisher tells the listeners (webhook events, alerts).
  redis.call('RPUSH', KEYS[13], id)
end
if state == 'succeeded' or state == 'failed' then
  redis.call('HINCRBY', KEYS[14], state, 1)
  redis.call('EXPIRE', KEYS[14], 7200)
end
if state == 'failed' and ARGV[10] == '1' then
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('ZADD', KEYS[7], now, id)
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
