-- Claim due arq jobs for one worker in one round trip, with arq's own test and mark: a job
-- is claimed when its in-progress key is absent and its queue score is due, and the claim is
-- that key, set for the claim's lifetime (arq's start_jobs does the same per job with WATCH,
-- EXISTS, ZSCORE, MULTI/PSETEX/EXEC). The i-th claim key belongs to the i-th id.
-- KEYS: queue, *claims
-- ARGV: now_ms, claim_ttl_ms, room, *ids
-- Returns {ids examined, id, score, id, score, ...}: the ids after those examined were not
-- looked at (the claim was full).
local claimed = {0}
local now = tonumber(ARGV[1])
local room = tonumber(ARGV[3])
for i = 4, #ARGV do
  if room == 0 then
    break
  end
  claimed[1] = i - 3
  local id, key = ARGV[i], KEYS[i - 2]
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
