-- wrk script of bench/http_submit.py: every request starts a new job.
--
--   SUBMIT_ROUTE=compat  POST /start_job/<id>?n_steps=<n>   (the original route; ids unique:
--                        each wrk thread counts up from SUBMIT_BASE_ID + its number × 10^8)
--   SUBMIT_ROUTE=v1      POST /v1/jobs {"kind": "steps", "params": {"n_steps": <n>}}
--                        (the server makes the ids)
--
-- At the end it prints one line "SUBMIT_RESULT {json}" with the figures of the whole run.

local route = os.getenv("SUBMIT_ROUTE") or "compat"
local n_steps = os.getenv("SUBMIT_N_STEPS") or "1"
local base_id = tonumber(os.getenv("SUBMIT_BASE_ID") or "0")
local threads = {}

function setup(thread)
  thread:set("first_id", base_id + #threads * 100000000)
  table.insert(threads, thread)
end

function init(args)
  next_id = first_id
  v1_body = '{"kind":"steps","params":{"n_steps":' .. n_steps .. '}}'
end

function request()
  if route == "v1" then
    return wrk.format("POST", "/v1/jobs", {["Content-Type"] = "application/json"}, v1_body)
  end
  next_id = next_id + 1
  return wrk.format("POST", "/start_job/" .. next_id .. "?n_steps=" .. n_steps)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SUBMIT_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d,"latency_mean_us":%.1f,"latency_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
