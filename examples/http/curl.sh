#!/usr/bin/env bash
# The decision server's API as curl calls, in the order an agent and an approver use them.
#
#   agenthalt serve --config examples/policy.yaml &
#   BASE=http://127.0.0.1:8550 bash examples/http/curl.sh
#
# With tokens in the policy's `server:` section, set AGENT_TOKEN, APPROVER_TOKEN and
# ADMIN_TOKEN; without, the server (on loopback) lets every call in.
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8550}
auth() { if [ -n "${1:-}" ]; then printf 'Authorization: Bearer %s' "$1"; else printf 'X-No-Token: 1'; fi; }
post() { curl -fsS -X POST "$BASE$1" -H 'Content-Type: application/json' -H "$(auth "$2")" -d "$3"; echo; }
get() { curl -fsS "$BASE$1" -H "$(auth "$2")"; echo; }
field() { python3 -c 'import json, sys; v = json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }

echo '# An agent proposes a call: allowed.'
post /v1/evaluate "${AGENT_TOKEN:-}" '{"call_id": "curl-1", "function_name": "gpt4_call", "arguments": {"prompt": "hi"}}'

echo '# It ran, and cost less than the estimate: settle the actual cost.'
post /v1/calls/curl-1/settle "${AGENT_TOKEN:-}" '{"actual_cost": 0.01}'

echo '# A call allowed but never run gives its charge back.'
post /v1/evaluate "${AGENT_TOKEN:-}" '{"call_id": "curl-2", "function_name": "web_search", "arguments": {"q": "x"}}'
post /v1/calls/curl-2/outcome "${AGENT_TOKEN:-}" '{"executed": false}'

echo '# A denied call: the reasons say why, never with the values.'
post /v1/evaluate "${AGENT_TOKEN:-}" '{"function_name": "drop_table", "arguments": {"table": "users"}}'

echo '# A purchase over the approval threshold: a person decides.'
ASKED=$(post /v1/evaluate "${AGENT_TOKEN:-}" '{"function_name": "buy_item", "arguments": {"amount": 75, "category": "office"}}')
echo "$ASKED"
ID=$(echo "$ASKED" | field '["approval"]["id"]')
get "/v1/approvals?state=pending" "${APPROVER_TOKEN:-}"
post "/v1/approvals/$ID/decision" "${APPROVER_TOKEN:-}" '{"decision": "approve", "reason": "expected order"}'
get "/v1/approvals/$ID/wait?timeout=5" "${AGENT_TOKEN:-}"

echo '# The agent proposes the same call again: the approval is used, once.'
post /v1/evaluate "${AGENT_TOKEN:-}" '{"function_name": "buy_item", "arguments": {"amount": 75, "category": "office"}}'

echo '# What the server saw, its guards, its metrics, its health.'
get /v1/stats "${APPROVER_TOKEN:-}"
get /v1/guards "${APPROVER_TOKEN:-}"
get /metrics "${APPROVER_TOKEN:-}" | sed -n 1,5p
get /readyz ""
post /v1/policy/reload "${ADMIN_TOKEN:-}" '{}'
