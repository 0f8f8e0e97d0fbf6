-- The one-line result bench/bench.py reads from wrk ("WRK_RESULT {json}"), shared by
-- golfers.lua and model.lua.
local M = {}

function M.write(summary, latency, ok, not_ok)
  local pcts = {}
  for _, p in ipairs({ 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100 }) do
    table.insert(pcts, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"requests":%d,"ok":%d,"not_ok":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{"min":%d,"mean":%.1f,"max":%d,"percentiles":{%s}}}\n',
    summary.duration, summary.requests, ok, not_ok, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, table.concat(pcts, ",")))
end

return M
