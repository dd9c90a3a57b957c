-- wrk script: POST /orders with a new Idempotency-Key each time (the accepting half
-- of the pipeline alone; run the server with CANOPY_RUN_JOBS=false). See
-- docs/BENCHMARKS.md, "Orders end to end".
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer":"bench-1","currency":"EUR","items":[{"sku":"bench-sku","quantity":1,"unit_price":250}]}'
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = string.format("wrk-%d-%d-%d", math.random(1e9), n, os.time())
  return wrk.format()
end
