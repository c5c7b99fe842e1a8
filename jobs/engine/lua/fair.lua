-- The fair queue's shared steps, put before every script that moves a job into it.
-- A waiting job is one member of its kind's queue, "<bucket>|<due, 13 digits>|<account>|
-- <job id>" (all scores 0, so a bucket's jobs sort by due time); the bucket is the
-- account (fair scheduling) or one bucket for all (FIFO). A bucket whose first job is due
-- waits for its turn in the ring; one whose jobs are all due later sleeps until the first.
local function fair_member(bucket, due, account, job)
  return bucket .. '|' .. string.format('%013d', due) .. '|' .. account .. '|' .. job
end

local function fair_insert(queue, ring, sleep, turn, backlog, kind, bucket, due, now, account, job)
  local member = fair_member(bucket, due, account, job)
  redis.call('ZADD', queue, 0, member)
  redis.call('ZINCRBY', backlog, 1, account)
  if not redis.call('ZSCORE', ring, bucket) then
    if due <= now then
      redis.call('ZADD', ring, redis.call('HINCRBY', turn, kind, 1), bucket)
      redis.call('ZREM', sleep, bucket)
    else
      redis.call('ZADD', sleep, 'LT', due, bucket)
    end
  end
  return member
end

local function fair_remove(queue, backlog, member, account)
  if member and redis.call('ZREM', queue, member) == 1 then
    if tonumber(redis.call('ZINCRBY', backlog, -1, account)) <= 0 then
      redis.call('ZREM', backlog, account)
    end
  end
end
