-- Create a job record and its arq job in one step, honouring an Idempotency-Key, and,
-- for a replay, linking the dead letter it replays.
-- KEYS: 1 record, 2 account index, 3 active, 4 waiting(kind), 5 kinds, 6 arq job,
--       7 arq queue, 8 idempotency key, 9 replayed record, 10 replayed attempts,
--       11 open dead letters
-- ARGV: 1 id, 2 kind, 3 created_ms (also the due time), 4 arq payload, 5 arq ttl ms,
--       6 retention s, 7 idempotency ttl s (0: none), 8 body fingerprint,
--       9 replayed job id ('' for none), 10 the record's fields, a JSON object of strings
--       (one argument rather than 20: redis-py packs every argument separately)
local id = ARGV[1]
if tonumber(ARGV[7]) > 0 then
  local existing = redis.call('GET', KEYS[8])
  if existing then
    local seen = cjson.decode(existing)
    if seen['fingerprint'] ~= ARGV[8] then
      return {'mismatch', seen['job_id']}
    end
    return {'replayed', seen['job_id']}
  end
end
if ARGV[9] ~= '' then
  if redis.call('HGET', KEYS[9], 'state') ~= 'failed' then
    return {'not_dead', ''}
  end
  local already = redis.call('HGET', KEYS[9], 'replayed_as')
  if already then
    return {'already_replayed', already}
  end
  redis.call('HSET', KEYS[9], 'replayed_as', id)
  redis.call('ZREM', KEYS[11], ARGV[9])
  redis.call('EXPIRE', KEYS[9], ARGV[6])
  redis.call('EXPIRE', KEYS[10], ARGV[6])
end
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[8], cjson.encode({job_id = id, fingerprint = ARGV[8]}), 'EX', ARGV[7])
end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[10])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[6])
local created = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], created, id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', created - tonumber(ARGV[6]) * 1000)
redis.call('ZADD', KEYS[3], created, id)
redis.call('ZADD', 'lr:jobs:all', created, id)
redis.call('ZREMRANGEBYSCORE', 'lr:jobs:all', '-inf', created - tonumber(ARGV[6]) * 1000)
redis.call('ZADD', KEYS[4], created, id)
redis.call('SADD', KEYS[5], ARGV[2])
redis.call('SET', KEYS[6], ARGV[4], 'PX', ARGV[5])
redis.call('ZADD', KEYS[7], created, id)
-- Wake the idle workers of this queue now rather than at their next poll (jobs/wakeup.py).
redis.call('PUBLISH', 'lr:wake:' .. KEYS[7], '')
return {'created', id}
