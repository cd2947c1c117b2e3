-- The standard body made deterministic (temperature 0), the same bytes every time: after the first
-- request, every one is an exact-cache hit.
local key = os.getenv("BENCH_KEY") or ""

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY"):gsub('"temperature":0%.2', '"temperature":0')
wrk.headers["Content-Type"] = "application/json"
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
