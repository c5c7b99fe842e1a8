-- A worker's heartbeat: refresh its entry and renew arq's claim on every job it runs,
-- so a long job is never taken by another worker while this one lives.
-- Answers 'fenced' when a reaper already declared this worker dead.
-- KEYS: 1 workers, 2 this worker's jobs, 3 this worker's fence marker
-- ARGV: 1 worker id, 2 now s, 3 claim ttl ms
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 'fenced'
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', 'arq:job:' .. id) == 1 then
    redis.call('SET', 'arq:in-progress:' .. id, '1', 'PX', ARGV[3])
  else
    -- arq dropped it (its run raised before the outcome was recorded): stop claiming it,
    -- so the reconciler can finish its record.
    redis.call('SREM', KEYS[2], id)
  end
end
return 'ok'
