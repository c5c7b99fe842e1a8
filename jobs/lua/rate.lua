-- A sliding-window rate limit: allow at most ARGV[3] events in any ARGV[2] ms.
-- KEYS: 1 the window's sorted set (member -> ms)
-- ARGV: 1 now ms, 2 window ms, 3 limit, 4 a unique member for this event
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
