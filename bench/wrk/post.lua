-- wrk script for the HTTP enqueue benchmark: POST a JSON body with a bearer key and a
-- unique Idempotency-Key per request (so every request makes a job), then print one JSON
-- line with the request count, errors and latency percentiles (microseconds).
-- Environment: BENCH_PATH, BENCH_KEY (empty: no Authorization header), BENCH_PREFIX (unique
-- per wrk run, so no run repeats another's keys).
local path = os.getenv("BENCH_PATH") or "/v1/exports"
local key = os.getenv("BENCH_KEY") or ""
local counter = 0
local threads = {}
local prefix = ""
local run = os.getenv("BENCH_PREFIX") or tostring(os.time())

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = string.format("%s-%d-", run, tid or 0)
end

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. counter,
  }
  if key ~= "" then
    headers["Authorization"] = "Bearer " .. key
  end
  return wrk.format("POST", path, headers, '{"user_id":"u1","format":"zip"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"latency_us":{"min":%d,"mean":%.1f,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.min, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
