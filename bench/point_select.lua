-- bench/point_select.lua — wrk script for bench/point_select.
--
-- Every request is POST /v1/db/bench/query with a point SELECT on a random
-- key in 1..KEYS (environment, default 100000):
--   {"sql":"SELECT v FROM kv WHERE k = ?","params":[K]}
-- or, with RPC=1 in the environment, the same as a JSON-RPC call on
-- POST /v1/db/bench/rpc:
--   {"id":1,"method":"query","params":{"sql":...,"params":[K]}}
-- Responses other than 200 (and JSON-RPC replies with an error) are
-- counted per thread. At the end it prints one
-- line that bench/point_select parses:
--   point_select: non200=N requests=R p50_us=.. p99_us=.. mean_us=..
-- and the first non-200 body it saw, to show what went wrong.

local keys = tonumber(os.getenv("KEYS") or "100000")
local rpc = os.getenv("RPC") == "1"
local fmt = '{"sql":"SELECT v FROM kv WHERE k = ?","params":[%d]}'
if rpc then
   fmt = '{"id":1,"method":"query","params":{"sql":"SELECT v FROM kv WHERE k = ?","params":[%d]}}'
end
local threads = {}

wrk.method = "POST"
wrk.path = rpc and "/v1/db/bench/rpc" or "/v1/db/bench/query"
wrk.headers["Content-Type"] = "application/json"

-- Keeps every thread, so done() can read their counters.
function setup(thread)
   table.insert(threads, thread)
end

-- Seeds each thread's generator apart and zeroes its counters.
function init(args)
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
   non200 = 0
   first_bad = nil
end

-- One request: a fresh random key each time.
function request()
   return wrk.format(nil, nil, nil, string.format(fmt, math.random(1, keys)))
end

-- Counts responses that are not 200, keeping the first one's status and body.
function response(status, headers, body)
   if status ~= 200 or (rpc and string.find(body or "", '"error":', 1, true)) then
      non200 = non200 + 1
      if first_bad == nil then
         first_bad = status .. " " .. string.sub(body or "", 1, 200)
      end
   end
end

-- Sums the threads' counters and prints the machine-readable line.
function done(summary, latency, requests)
   local bad = 0
   local first = nil
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non200") or 0)
      first = first or t:get("first_bad")
   end
   io.write(string.format("point_select: non200=%d requests=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f\n",
      bad, summary.requests, latency:percentile(50), latency:percentile(99), latency.mean))
   if first ~= nil then
      io.write("point_select: first non-200: " .. first .. "\n")
   end
end
