-- A worker's heartbeat: refresh its entry and renew arq's claim on every job it runs, so a
-- long job is never taken by another worker while this one lives. Answers 'fenced' when a
-- reaper already declared this worker dead.
-- KEYS: workers, fence, *claims
-- ARGV: worker, now_s, claim_ttl_ms
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'fenced'
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
for i = 3, #KEYS do
  -- XX: a job that ended meanwhile keeps no claim.
  redis.call('SET', KEYS[i], '1', 'XX', 'PX', ARGV[3])
end
return 'ok'
