#!/usr/bin/env python3
"""An agent loop that asks the AgentHalt decision server before every tool call.

Standard library only. For each call the model proposes: evaluate it; run it if allowed (with
the arguments the server returns when a guard changed them); settle its actual cost; wait for a
person when an approval is asked, then propose the same call again.

    agenthalt serve --config examples/policy.yaml &
    python3 examples/http/agent.py http://127.0.0.1:8550

Set AGENTHALT_TOKEN to an agent token when the server has tokens. Prints one JSON line per call
and exits 0 once every call got its answer.
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8550"
TOKEN = os.environ.get("AGENTHALT_TOKEN")
APPROVAL_WAIT = float(os.environ.get("AGENTHALT_APPROVAL_WAIT", "60"))


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if TOKEN:
        request.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(request, timeout=APPROVAL_WAIT + 10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}")


# The tools: what would really send mail, buy or search. Each returns what it cost.
TOOLS = {
    "web_search": lambda args: 0.004,
    "gpt4_call": lambda args: 0.021,
    # What a purchase costs is the purchase guard's business; the call itself is free.
    "buy_item": lambda args: 0.0,
    "drop_table": lambda args: 0.0,
    "send_email": lambda args: 0.0,
}


def guarded(function_name, arguments, session_id="py-demo"):
    """Asks the server, runs the tool if allowed, and tells the server what happened."""
    proposal = {"function_name": function_name, "arguments": arguments, "session_id": session_id}
    answer = call("POST", "/v1/evaluate", proposal)
    if answer["decision"] == "require_approval" and not answer["allowed"]:
        approval = answer["approval"]
        decided = call("GET", f"/v1/approvals/{approval['id']}/wait?timeout={APPROVAL_WAIT}")
        if decided["state"] != "approved":
            return {"function": function_name, "ran": False, "why": f"approval {decided['state']}"}
        # Approved: the same call again uses the approval (once).
        answer = call("POST", "/v1/evaluate", proposal)
    if not answer["allowed"]:
        return {"function": function_name, "ran": False, "why": answer["reasons"]}
    args = answer.get("modified_arguments", arguments)
    cost = TOOLS[function_name](args)
    settled = call("POST", f"/v1/calls/{answer['call_id']}/outcome", {"executed": True, "actual_cost": cost})
    return {"function": function_name, "ran": True, "decision": answer["decision"], "actual_cost": settled.get("actual")}


def main():
    plan = [
        ("web_search", {"q": "cheap office chairs"}),
        ("gpt4_call", {"prompt": "summarise the results"}),
        ("buy_item", {"amount": 75, "category": "office", "item": "chair"}),
        ("drop_table", {"table": "orders"}),
        ("send_email", {"to": "ops@example.com", "body": "my SSN is 123-45-6789"}),
    ]
    results = [guarded(name, args) for name, args in plan]
    for r in results:
        print(json.dumps(r))
    ran = [r["function"] for r in results if r["ran"]]
    # What a correct server answers for the example policy.
    if ran != ["web_search", "gpt4_call", "buy_item"]:
        raise SystemExit(f"unexpected: {ran}")


if __name__ == "__main__":
    main()
