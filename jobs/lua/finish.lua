-- Record the outcome of an attempt: retrying, queued (handed back), or a final state.
-- A failed job becomes a dead letter: its record is kept until replayed or purged.
-- KEYS: 1 record, 2 attempts, 3 waiting(kind), 4 running(kind), 5 active, 6 dead letters,
--       7 open dead letters, 8 arq job, 9 arq in-progress, 10 arq retry counter,
--       11 arq abort set, 12 arq queue
-- ARGV: 1 id, 2 new state, 3 now ms, 4 attempt entry json ('' keeps the last entry),
--       5 retention s, 6 due ms (retrying/queued), 7 guard: '' none; 'orphan': only when
--       arq holds no job for it; otherwise a worker id that must still own the run,
--       8 undo arq's try count ('1' for a run handed back at shutdown),
--       9 '1': put a succeeded job on the outbox (kinds with webhook events; a failed job
--       always goes there, for its event or its failure alert), 10.. field/value pairs
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local current = redis.call('HGET', KEYS[1], 'state')
if current == 'succeeded' or current == 'failed' or current == 'cancelled' then
  return 0
end
local owner = redis.call('HGET', KEYS[1], 'worker')
if ARGV[7] == 'orphan' then
  if redis.call('EXISTS', KEYS[8]) == 1 then
    return 0
  end
elseif ARGV[7] ~= '' and (current ~= 'running' or owner ~= ARGV[7]) then
  return 0
end
local id, state, now = ARGV[1], ARGV[2], ARGV[3]
if state == 'retrying' and redis.call('HEXISTS', KEYS[1], 'cancel_requested_at') == 1 then
  state = 'cancelled'
end
local fields = {'state', state, 'updated_at', now}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[4] ~= '' and redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('LSET', KEYS[2], -1, ARGV[4])
end
redis.call('ZREM', KEYS[4], id)
if owner then
  redis.call('SREM', 'lr:worker:' .. owner .. ':jobs', id)
end
if ARGV[8] == '1' then
  redis.call('DECR', KEYS[10])
end
redis.call('PUBLISH', KEYS[1], state)
if state == 'retrying' or state == 'queued' then
  redis.call('ZADD', KEYS[3], ARGV[6], id)
  return 1
end
redis.call('HSET', KEYS[1], 'finished_at', now, 'next_attempt_at', '')
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[3], id)
-- arq's own end of a finished job (its finish_job), done here in the same step: the
-- worker then skips arq's round trip for it (jobs/claims.py).
redis.call('ZREM', KEYS[11], id)
redis.call('ZREM', KEYS[12], id)
redis.call('DEL', KEYS[8], KEYS[9], KEYS[10])
if state == 'succeeded' or state == 'failed' then
  -- The outbox: the webhook publisher turns this into an event (or a failure alert).
  if state == 'failed' or ARGV[9] == '1' then
    redis.call('RPUSH', 'lr:outbox', id)
  end
  local minute = 'lr:stats:' .. math.floor(tonumber(now) / 60000)
  redis.call('HINCRBY', minute, state, 1)
  redis.call('EXPIRE', minute, 7200)
end
if state == 'failed' then
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('ZADD', KEYS[7], now, id)
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
