-- Claim the next due jobs for one worker's free slots, fairly: kinds take turns slot by
-- slot, and within a kind the accounts with a due job take turns (round-robin), so one
-- account's backlog never delays another's next job by more than a free slot. An account
-- at its max_running (counted across all workers) or paused keeps its place for later; a
-- paused kind is skipped. A claimed job leaves the queue for `claimed` until its run starts.
-- KEYS: turn, running, backlog, limits, paused_kinds, paused_accounts, *per_kind
-- ARGV: now_ms, slots, scan_limit, *kinds
-- per_kind: queue, ring, sleep, claimed for each kind, in the order of `kinds`.
-- Returns {job id, due ms, job id, due ms, ...}.
local now, slots, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local kinds = {}
for i = 4, #ARGV do
  local base = 6 + (i - 4) * 4
  kinds[#kinds + 1] = {name = ARGV[i], queue = KEYS[base + 1], ring = KEYS[base + 2],
                       sleep = KEYS[base + 3], claimed = KEYS[base + 4]}
end
local limits, paused = {}, {}
local function blocked(bucket, account)
  if paused[account] == nil then
    paused[account] = redis.call('SISMEMBER', KEYS[6], account) == 1
  end
  if paused[account] then
    return true
  end
  if limits[account] == nil then
    limits[account] = tonumber(redis.call('HGET', KEYS[4], account) or redis.call('HGET', KEYS[4], '*') or '0')
  end
  local limit = limits[account]
  return limit > 0 and redis.call('ZLEXCOUNT', KEYS[2], '[' .. account .. '|', '[' .. account .. '|\255') >= limit
end

local open = {}
for _, kind in ipairs(kinds) do
  if redis.call('SISMEMBER', KEYS[5], kind.name) == 0 then
    for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', kind.sleep, '-inf', now)) do
      redis.call('ZREM', kind.sleep, bucket)
      redis.call('ZADD', kind.ring, redis.call('HINCRBY', KEYS[1], kind.name, 1), bucket)
    end
    open[#open + 1] = kind
  end
end

-- The next startable job of a kind: the bucket whose turn it is, if its first job is due.
local function pick(kind)
  local seen = redis.call('ZCARD', kind.ring)
  while seen > 0 and budget > 0 do
    seen, budget = seen - 1, budget - 1
    local bucket = redis.call('ZRANGE', kind.ring, 0, 0)[1]
    local head = redis.call('ZRANGEBYLEX', kind.queue, '[' .. bucket .. '|', '[' .. bucket .. '|\255', 'LIMIT', 0, 1)[1]
    if not head then
      redis.call('ZREM', kind.ring, bucket)
    else
      local at = #bucket + 2
      local due = tonumber(string.sub(head, at, at + 12))
      local account, job = string.match(string.sub(head, at + 14), '^([^|]*)|(.*)$')
      if due > now then
        redis.call('ZREM', kind.ring, bucket)
        redis.call('ZADD', kind.sleep, due, bucket)
      else
        -- Its turn is used (or passed, when blocked): to the back of the ring.
        redis.call('ZADD', kind.ring, redis.call('HINCRBY', KEYS[1], kind.name, 1), bucket)
        if not blocked(bucket, account) then
          redis.call('ZREM', kind.queue, head)
          if tonumber(redis.call('ZINCRBY', KEYS[3], -1, account)) <= 0 then
            redis.call('ZREM', KEYS[3], account)
          end
          redis.call('ZADD', kind.claimed, now, job)
          redis.call('ZADD', KEYS[2], 0, account .. '|' .. job)
          return {job, due}
        end
      end
    end
  end
  return nil
end

local claimed = {}
if #open == 0 then
  return claimed
end
local cursor = tonumber(redis.call('HINCRBY', KEYS[1], '~kinds', 1))
local done, left = {}, #open
while #claimed < slots * 2 and left > 0 and budget > 0 do
  local i = (cursor % #open) + 1
  cursor = cursor + 1
  if not done[i] then
    local found = pick(open[i])
    if found then
      claimed[#claimed + 1] = found[1]
      claimed[#claimed + 1] = found[2]
    else
      done[i], left = true, left - 1
    end
  end
end
return claimed
