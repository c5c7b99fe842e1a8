-- Count one paid Claude call once: the first time its message is counted, its tokens go to
-- the account's usage and its answer is kept for the job (a rerun of the job, after a
-- failure that came later, uses it instead of paying again); a second count adds nothing.
-- KEYS: counted, usage, answer
-- ARGV: ttl_s, answer_json, answer_ttl_s, *increments
-- increments: field, tokens, field, tokens, ... (e.g. '<model>:input_tokens', 812)
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
return 1
