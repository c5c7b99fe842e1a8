-- A worker's heartbeat: refresh its entry; answers 'fenced' when a reaper already declared
-- this worker dead.
-- KEYS: workers, fence
-- ARGV: worker, now_s
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'fenced'
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 'ok'
