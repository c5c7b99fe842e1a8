-- One Claude budget for every worker: requests, input tokens and output tokens a minute, as
-- continuously refilling buckets (as Anthropic enforces its limits), and a hold that stops
-- every worker's calls until a 429's or 529's retry-after has passed.
-- KEYS: budget, hold, probe
-- ARGV: op, now_ms, requests, input_tokens, output_tokens, *learned
-- op 'take': take the amounts if every bucket has them; answers 0, or the ms to wait.
-- op 'hold': hold every call for `requests` ms from now (a longer hold already set stays).
-- op 'settle': give back (or take more of) the amounts after the answer (the estimate
-- minus the usage), and learn from the answer's headers: learned is, per dimension
-- (requests, input, output), its limit a minute and what is left ('' when not given).
-- Configured limits are written as `<dim>:fixed` and never overwritten by what is learned.
-- Until a first answer has said what the limits are, one call at a time goes (the probe):
-- a fleet of workers never opens with a burst the organisation's limit would refuse.
local now = tonumber(ARGV[2])
local dims = {'req', 'in', 'out'}
local want = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}

local function state(dim)
  local v = redis.call('HMGET', KEYS[1], dim .. ':limit', dim .. ':cap', dim .. ':tokens', dim .. ':at')
  local limit = tonumber(v[1] or '0')
  local s = {limit = limit, cap = tonumber(v[2] or '0'), tokens = tonumber(v[3] or '0'), at = tonumber(v[4] or now)}
  if limit > 0 then
    s.tokens = math.min(s.cap, s.tokens + (now - s.at) * limit / 60000)
  end
  s.at = now
  return s
end

local function save(dim, s)
  redis.call('HSET', KEYS[1], dim .. ':cap', s.cap, dim .. ':tokens', s.tokens, dim .. ':at', s.at)
end

if ARGV[1] == 'hold' then
  local until_ms = now + want[1]
  if until_ms > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], until_ms, 'PX', want[1] + 1000)
  end
  return 0
end

if ARGV[1] == 'take' then
  local held = tonumber(redis.call('GET', KEYS[2]) or '0')
  if held > now then
    return math.ceil(held - now)
  end
  if not redis.call('HGET', KEYS[1], 'learned') then
    if redis.call('SET', KEYS[3], '1', 'NX', 'PX', 10000) then
      return 0
    end
    return 100
  end
  local states, wait = {}, 0
  for i, dim in ipairs(dims) do
    local s = state(dim)
    states[i] = s
    if s.limit > 0 then
      local need = math.min(want[i], s.cap)
      if s.tokens < need then
        wait = math.max(wait, (need - s.tokens) * 60000 / s.limit)
      end
    end
  end
  for i, dim in ipairs(dims) do
    if wait == 0 and states[i].limit > 0 then
      states[i].tokens = states[i].tokens - want[i]
    end
    save(dim, states[i])
  end
  redis.call('PEXPIRE', KEYS[1], 3600000)
  return math.ceil(wait)
end

redis.call('HSET', KEYS[1], 'learned', 1)
redis.call('DEL', KEYS[3])
for i, dim in ipairs(dims) do
  local s = state(dim)
  local limit, left = ARGV[5 + i * 2 - 1], ARGV[5 + i * 2]
  if limit and limit ~= '' and not redis.call('HGET', KEYS[1], dim .. ':fixed') then
    if s.limit == 0 then
      -- First sight of this limit: start from what the server says is left.
      s.tokens = tonumber(left ~= '' and left or limit)
    end
    s.limit = tonumber(limit)
    redis.call('HSET', KEYS[1], dim .. ':limit', s.limit)
  end
  if s.limit > 0 then
    s.tokens = s.tokens - want[i]
    if left and left ~= '' then
      -- The server's view counts the organisation's other callers too: never above it.
      local remaining = tonumber(left)
      s.cap = math.max(s.cap, remaining + (i == 1 and 1 or 0))
      s.tokens = math.min(s.tokens, remaining)
    end
    if s.cap == 0 then
      s.cap = math.max(1, math.floor(s.limit / 60))
    end
    s.tokens = math.min(s.tokens, s.cap)
  end
  save(dim, s)
end
redis.call('PEXPIRE', KEYS[1], 3600000)
return 0
