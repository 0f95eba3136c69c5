-- wrk script: POST /rag with a different JSON body on every request.
--
--   wrk -t2 -c20 -d10s -s bench/wrk/bodies.lua http://127.0.0.1:8080 -- BODIES_FILE [timings]
--
-- BODIES_FILE holds one JSON request body per line; thread i of n sends lines i, i+n, i+2n, ...
-- so no two requests of a run share a body until the file is exhausted (then it wraps, and
-- the summary says how often). With "timings", the Server-Timing stage durations of every
-- answer are collected too. done() prints one line, "BENCH_JSON {...}", that the harness parses.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

-- per-thread state (each thread has its own Lua state)
local bodies = {}
local nthreads = 1
local pos = 0
local headers = { ["Content-Type"] = "application/json" }
non2xx = 0
wrapped = 0
collect = false
search_ms = {}
embed_ms = {}
rerank_ms = {}

function init(args)
  local path = args[1]
  collect = args[2] == "timings"
  for line in io.lines(path) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  if #bodies == 0 then
    error("no request bodies in " .. tostring(path))
  end
  nthreads = tonumber(args[3] or "1")
  pos = tid - nthreads
end

function request()
  pos = pos + nthreads
  if pos > #bodies then
    pos = ((pos - 1) % #bodies) + 1
    wrapped = wrapped + 1
  end
  return wrk.format("POST", "/rag", headers, bodies[pos])
end

local function stage(header, name)
  local v = string.match(header, name .. ";dur=([%d%.]+)")
  return v and tonumber(v)
end

function response(status, hdrs, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if collect then
    local st = hdrs["server-timing"] or hdrs["Server-Timing"]
    if st then
      local s = stage(st, "search")
      if s then search_ms[#search_ms + 1] = s end
      local e = stage(st, "embed")
      if e then embed_ms[#embed_ms + 1] = e end
      local r = stage(st, "rerank")
      if r then rerank_ms[#rerank_ms + 1] = r end
    end
  end
end

local function quantiles(values)
  table.sort(values)
  local n = #values
  if n == 0 then
    return "null"
  end
  local function q(p)
    local i = math.max(1, math.min(n, math.ceil(p * n)))
    return values[i]
  end
  return string.format('{"n": %d, "p50": %.4f, "p95": %.4f, "p99": %.4f}', n, q(0.50), q(0.95), q(0.99))
end

function done(summary, latency, requests)
  local bad, wraps = 0, 0
  local all = { search = {}, embed = {}, rerank = {} }
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
    wraps = wraps + (t:get("wrapped") or 0)
    for name, key in pairs({ search = "search_ms", embed = "embed_ms", rerank = "rerank_ms" }) do
      local vals = t:get(key) or {}
      for _, v in ipairs(vals) do
        all[name][#all[name] + 1] = v
      end
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, "wrapped": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p95": %d, "p99": %d}, '
      .. '"stages_ms": {"search": %s, "embed": %s, "rerank": %s}}\n',
    summary.requests, summary.duration, summary.bytes, bad, wraps,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99),
    quantiles(all.search), quantiles(all.embed), quantiles(all.rerank)
  ))
end
