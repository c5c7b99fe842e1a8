-- Store a running job's progress and tell its watchers; a record that ended, expired or
-- never existed is left alone (a late progress report must not resurrect it).
-- KEYS: record
-- ARGV: progress, now_ms, stage, has_stage
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'updated_at', ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'stage', ARGV[3])
end
redis.call('PUBLISH', KEYS[1], 'progress')
return 1
