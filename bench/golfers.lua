-- wrk script: simulated golfers chatting with the coach.
-- wrk -t T -c C -d D -s bench/golfers.lua URL -- GOLFERS THINK_MS RUN_ID T
-- Each request goes as the next golfer of its thread (golfer-0001 … golfer-GOLFERS, seeded by
-- `coach-api seed --golfers N`), so every golfer sends turn after turn of one day's
-- conversation; a connection waits THINK_MS (±50 %) between messages, as a person reads and types.
-- done() prints one JSON line, prefixed "WRK_RESULT ", that bench/bench.py reads.
package.path = "bench/?.lua;" .. package.path
local result = require("wrk_result")

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- What golfers ask, from a few words to a paragraph (app messages run 20-600 characters).
local messages = {
  "How do I fix my slice?",
  "My driver keeps going right. What should I work on first?",
  "I only have twenty minutes at the range tonight. What drill gives me the most?",
  "Yesterday I tried the lead hip drill and the ball started left of target, then stayed there. Is that the face closing too early, or am I coming over the top again?",
  "What does the tempo ratio in my last analysis mean?",
  "My 7-iron contact is thin most of the time. I set up with the ball in the middle of my stance and my weight feels even, but by impact I feel like I am standing up. Any idea why, and what I could feel instead?",
  "Is my grip too strong?",
  "I play a round on Saturday. Should I change anything before then or just play?",
  "Thanks, that helped. The last bucket felt much smoother and the ball flight was lower and straighter. What should I focus on next time, given my swing analyses this week?",
  "Short game question: my chips come out low and run too far. I use a pitching wedge for almost everything around the green. Should I switch clubs or change the technique?",
  "Can you explain the out-to-in path again in simpler words?",
  "I get tense on the first tee and my first drive is always my worst of the day. Besides the swing itself, is there a routine that helps with that? I have tried breathing but I forget it when the group behind is watching.",
}

function init(args)
  golfers = tonumber(args[1]) or 100
  think_ms = tonumber(args[2]) or 1000
  run_id = args[3] or "run"
  per_thread = math.max(1, math.floor(golfers / (tonumber(args[4]) or 2)))
  sent = 0
  ok = 0
  not_ok = 0
  math.randomseed(tid * 7919 + 17)
end

function delay()
  if think_ms <= 0 then return 0 end
  return math.floor(think_ms * (0.5 + math.random()))
end

function request()
  local i = sent
  sent = sent + 1
  local g = tid * per_thread + (i % per_thread) + 1
  local turn = math.floor(i / per_thread)
  local user = string.format("golfer-%04d", g)
  local message = messages[((g + turn) % #messages) + 1]
  local body = string.format('{"message":"%s","clientMessageId":"bench-%s-%d-%06d"}', message, run_id, tid, i)
  local headers = { ["Content-Type"] = "application/json", ["X-User-Id"] = user }
  return wrk.format("POST", "/api/chat/coaching", headers, body)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else not_ok = not_ok + 1 end
end

function done(summary, latency, requests)
  local ok_total, not_ok_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    not_ok_total = not_ok_total + t:get("not_ok")
  end
  result.write(summary, latency, ok_total, not_ok_total)
end
