-- wrk script: the mock model alone, with the same connections and think time as the golfers,
-- so its latency is the floor the service's latency is compared with.
-- wrk -t T -c C -d D -s bench/model.lua URL -- THINK_MS
-- done() prints one JSON line, prefixed "WRK_RESULT ", that bench/bench.py reads.

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
  local pcts = {}
  for _, p in ipairs({ 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100 }) do
    table.insert(pcts, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"requests":%d,"ok":%d,"not_ok":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{"min":%d,"mean":%.1f,"max":%d,"percentiles":{%s}}}\n',
    summary.duration, summary.requests, summary.requests - e.status, e.status, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, table.concat(pcts, ",")))
end
