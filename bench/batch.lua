-- bench/batch.lua — wrk script for bench/capnweb: HTTP batches of CALLS
-- point SELECTs (random keys in 1..KEYS), as one JSON-RPC batch (MODE=jsonrpc,
-- POST /v1/db/bench/rpc) or one Cap'n Web HTTP batch (MODE=capnweb, POST
-- /v1/db/bench/capnweb: CALLS pushes, then CALLS pulls, one per line).
-- Counts responses that are not 200, and ones whose body holds an error
-- ("error" in JSON-RPC, "reject" or "abort" in Cap'n Web). Prints:
--   batch: bad=N requests=R p50_us=..

local keys = tonumber(os.getenv("KEYS") or "100000")
local calls = tonumber(os.getenv("CALLS") or "100")
local mode = os.getenv("MODE") or "jsonrpc"
local threads = {}

wrk.method = "POST"
wrk.path = mode == "capnweb" and "/v1/db/bench/capnweb" or "/v1/db/bench/rpc"
wrk.headers["Content-Type"] = mode == "capnweb" and "text/plain" or "application/json"

-- Keeps every thread, so done() can read their counters.
function setup(thread)
   table.insert(threads, thread)
end

-- Seeds each thread's generator apart and zeroes its counter.
function init(args)
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
   bad = 0
end

-- One batch with fresh random keys.
function request()
   local parts = {}
   if mode == "capnweb" then
      for i = 1, calls do
         parts[#parts + 1] = string.format(
            '["push",["pipeline",0,["query"],[{"sql":"SELECT v FROM kv WHERE k = ?","params":[[%d]]}]]]',
            math.random(1, keys))
      end
      for i = 1, calls do
         parts[#parts + 1] = string.format('["pull",%d]', i)
      end
      return wrk.format(nil, nil, nil, table.concat(parts, "\n"))
   end
   for i = 1, calls do
      parts[#parts + 1] = string.format(
         '{"id":%d,"method":"query","params":{"sql":"SELECT v FROM kv WHERE k = ?","params":[%d]}}',
         i, math.random(1, keys))
   end
   return wrk.format(nil, nil, nil, "[" .. table.concat(parts, ",") .. "]")
end

-- Counts failed batches.
function response(status, headers, body)
   if status ~= 200 or string.find(body, mode == "capnweb" and '%["reject"' or '"error":')
      or string.find(body, '%["abort"') then
      bad = bad + 1
   end
end

-- Sums the threads' counters and prints the machine-readable line.
function done(summary, latency, requests)
   local b = 0
   for _, t in ipairs(threads) do
      b = b + (t:get("bad") or 0)
   end
   io.write(string.format("batch: bad=%d requests=%d p50_us=%.1f\n", b, summary.requests,
      latency:percentile(50)))
end
