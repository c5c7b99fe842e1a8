-- Claim due arq jobs for one worker in one round trip, with arq's own test and mark:
-- a job is claimed when its in-progress key is absent and its queue score is due, and the
-- claim is that key, set for arq's in-progress timeout (arq's start_jobs does the same per
-- job with WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC).
-- KEYS: 1 queue
-- ARGV: 1 now ms, 2 in-progress ttl ms, 3 in-progress key prefix, 4 most jobs to claim,
--       5.. job ids, in queue order
-- Returns {ids examined, id, score, id, score, ...}: the ids after those examined were not
-- looked at (the claim was full).
local claimed = {0}
local now = tonumber(ARGV[1])
local room = tonumber(ARGV[4])
for i = 5, #ARGV do
  if room == 0 then
    break
  end
  claimed[1] = i - 4
  local id = ARGV[i]
  local key = ARGV[3] .. id
  if redis.call('EXISTS', key) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and tonumber(score) <= now then
      redis.call('SET', key, '1', 'PX', ARGV[2])
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = score
      room = room - 1
    end
  end
end
return claimed
