-- Count a job's Claude usage once: the first call per job adds its tokens to the account's
-- usage, later calls (a rerun of the same job) add nothing.
-- KEYS: counted, usage
-- ARGV: ttl_s, *increments
-- increments: field, tokens, field, tokens, ... (e.g. '<model>:input_tokens', 812)
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
