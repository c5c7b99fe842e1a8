-- Hold one of at most `limit` slots (e.g. an account's open event streams), each alive until
-- its `expires_ms` unless refreshed; slots whose holder died lapse on their own.
-- KEYS: slots
-- ARGV: now_ms, limit, member, expires_ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
