-- Put a claimed job that never started back in the fair queue (its worker died, or lost
-- it, between the claim and the start), and drop what a job that did start, or ended,
-- left of its claim.
-- KEYS: record, claimed, waiting, queue, ring, sleep, turn, backlog, fair_running
-- ARGV: id, now_ms, bucket
local id, now = ARGV[1], tonumber(ARGV[2])
redis.call('ZREM', KEYS[2], id)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
local account = redis.call('HGET', KEYS[1], 'account')
if state ~= 'queued' and state ~= 'retrying' then
  if state ~= 'running' then
    redis.call('ZREM', KEYS[9], account .. '|' .. id)
  end
  return state
end
redis.call('ZREM', KEYS[9], account .. '|' .. id)
local kind = redis.call('HGET', KEYS[1], 'kind')
local member = fair_insert(KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], kind, ARGV[3], now, now, account, id)
redis.call('HSET', KEYS[1], 'qm', member)
redis.call('ZADD', KEYS[3], now, id)
return 'requeued'
