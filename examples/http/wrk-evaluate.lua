-- A wrk script: POST /v1/evaluate with a mix of realistic calls, each different.
--   wrk -t1 -c64 -d20s --latency -s examples/http/wrk-evaluate.lua http://127.0.0.1:8550
-- With tokens, set AGENTHALT_TOKEN to an agent token.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("AGENTHALT_TOKEN")
if token then wrk.headers["Authorization"] = "Bearer " .. token end

local calls = {
  '{"function_name":"web_search","arguments":{"q":"office chairs %d"},"session_id":"s%d"}',
  '{"function_name":"gpt4_call","arguments":{"prompt":"summarise result %d","max_tokens":512},"session_id":"s%d"}',
  '{"function_name":"buy_item","arguments":{"amount":12.5,"category":"office","item":"paper %d"},"session_id":"s%d"}',
  '{"function_name":"send_email","arguments":{"to":"ops@example.com","body":"order %d shipped"},"session_id":"s%d"}',
  '{"function_name":"delete_file","arguments":{"resource_id":"temp_%d.txt"},"session_id":"s%d"}',
  '{"function_name":"read_file","arguments":{"path":"/srv/data/report-%d.csv"},"session_id":"s%d"}',
}
local n = 0
request = function()
  n = n + 1
  local body = string.format(calls[(n % #calls) + 1], n, n % 100)
  return wrk.format(nil, nil, nil, body)
end
