-- Create a job record and queue it in one step. An Idempotency-Key already used by the
-- account returns its job (or a mismatch); a fixed job id already taken is a normal
-- outcome ('exists'); an account at its max_queued gets 'queue_full' and nothing is
-- written; a replay links the dead letter it replays.
-- KEYS: record, listing, all_jobs, active, waiting, kinds, arq_job, arq_queue, idempotency, replayed_record, replayed_attempts, dlq_open, unfinished, queue, ring, sleep, turn, backlog
-- ARGV: id, kind, created_ms, due_ms, arq_payload, arq_ttl_ms, retention_s, idempotency_ttl_s, fingerprint, replay_of, listed, in_all_jobs, counted, wake_channel, max_queued, bucket, account, fields_json
-- fields_json is the record's fields as one JSON object of strings (one argument rather
-- than twenty: redis-py packs every argument separately). `counted`: the job counts
-- against the account's max_queued while unfinished (0: no limit).
local id = ARGV[1]
local idem_ttl = tonumber(ARGV[8])
if idem_ttl > 0 then
  local existing = redis.call('GET', KEYS[9])
  if existing then
    local seen = cjson.decode(existing)
    if seen['fingerprint'] ~= ARGV[9] then
      return {'mismatch', seen['job_id']}
    end
    return {'replayed', seen['job_id']}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', id}
end
local retention = tonumber(ARGV[7])
local created, due = tonumber(ARGV[3]), tonumber(ARGV[4])
local oldest = created - retention * 1000
local max_queued = tonumber(ARGV[15])
if ARGV[13] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', oldest)
  if max_queued > 0 and redis.call('ZCARD', KEYS[13]) >= max_queued then
    return {'queue_full', tostring(max_queued)}
  end
end
if ARGV[10] ~= '' then
  if redis.call('HGET', KEYS[10], 'state') ~= 'failed' then
    return {'not_dead', ''}
  end
  local already = redis.call('HGET', KEYS[10], 'replayed_as')
  if already then
    return {'already_replayed', already}
  end
  redis.call('HSET', KEYS[10], 'replayed_as', id)
  redis.call('ZREM', KEYS[12], ARGV[10])
  redis.call('EXPIRE', KEYS[10], retention)
  redis.call('EXPIRE', KEYS[11], retention)
end
if idem_ttl > 0 then
  redis.call('SET', KEYS[9], cjson.encode({job_id = id, fingerprint = ARGV[9]}), 'EX', idem_ttl)
end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[18])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[11] == '1' then
  redis.call('ZADD', KEYS[2], created, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', oldest)
end
if ARGV[13] == '1' then
  redis.call('ZADD', KEYS[13], created, id)
end
if ARGV[12] == '1' then
  redis.call('ZADD', KEYS[3], created, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest)
end
redis.call('ZADD', KEYS[4], created, id)
redis.call('ZADD', KEYS[5], due, id)
redis.call('SADD', KEYS[6], ARGV[2])
redis.call('SET', KEYS[7], ARGV[5], 'PX', ARGV[6])
redis.call('ZADD', KEYS[8], due, id)
local member = fair_insert(KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18], ARGV[2], ARGV[16], due, created, ARGV[17], id)
redis.call('HSET', KEYS[1], 'qm', member)
redis.call('EXPIRE', KEYS[1], retention)
if due <= created then
  -- Wake the idle workers now rather than at their next poll.
  redis.call('PUBLISH', ARGV[14], '')
end
return {'created', id}
