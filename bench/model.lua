-- wrk script: the mock model alone, with the same connections and think time as the golfers,
-- so its latency is the floor the service's latency is compared with.
-- wrk -t T -c C -d D -s bench/model.lua URL -- THINK_MS
-- done() prints one JSON line, prefixed "WRK_RESULT ", that bench/bench.py reads.
package.path = "bench/?.lua;" .. package.path
local result = require("wrk_result")

local body = '{"model":"gpt-4o","max_tokens":400,"messages":[{"role":"user","content":"How do I fix my slice?"}]}'

function init(args)
  think_ms = tonumber(args[1]) or 1000
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function delay()
  if think_ms <= 0 then return 0 end
  return math.floor(think_ms * (0.5 + math.random()))
end

function done(summary, latency, requests)
  result.write(summary, latency, summary.requests - summary.errors.status, summary.errors.status)
end
