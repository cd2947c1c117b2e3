-- The standard body made deterministic (temperature 0) with a counter in the question: every request is
-- a cache miss that is looked up, forwarded and then stored.
local key = os.getenv("BENCH_KEY") or ""
local body = os.getenv("BENCH_BODY"):gsub('"temperature":0%.2', '"temperature":0')
local headers = {["Content-Type"] = "application/json"}
if key ~= "" then
  headers["Authorization"] = "Bearer " .. key
end
local counter = 0

function request()
  counter = counter + 1
  local unique = body:gsub("in one sentence", "in one sentence (request " .. counter .. ")", 1)
  return wrk.format("POST", nil, headers, unique)
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
