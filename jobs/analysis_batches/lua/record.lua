-- Record one document's result in its batch, once: the first result of a document counts
-- (succeeded or failed), its tokens go to the batch's and the account's usage (and to the
-- account's economy usage for a Message Batch answer), and the document's latest analysis
-- becomes this batch's (while the document exists). A second result of it changes nothing.
-- KEYS: results, meta, doc, usage, economy_usage
-- ARGV: doc_id, job_id, entry_json, outcome, model, economy, *increments
-- increments: name, tokens, name, tokens, ... (e.g. 'input_tokens', 812)
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
for i = 7, #ARGV, 2 do
  local name, tokens = ARGV[i], ARGV[i + 1]
  redis.call('HINCRBY', KEYS[2], 'usage:' .. name, tokens)
  redis.call('HINCRBY', KEYS[4], ARGV[5] .. ':' .. name, tokens)
  if ARGV[6] == '1' then
    redis.call('HINCRBY', KEYS[5], ARGV[5] .. ':' .. name, tokens)
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'latest_analysis_job', ARGV[2])
end
return 1
