-- One chat completion per request, the same bytes every time.
-- Environment (set by bench/run.py): BENCH_BODY (the JSON body), BENCH_KEY (bearer key, may be empty).
local key = os.getenv("BENCH_KEY") or ""

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
