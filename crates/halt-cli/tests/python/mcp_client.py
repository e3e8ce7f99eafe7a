"""An MCP client written with the Python `mcp` SDK (PyPI), driving `agenthalt mcp-proxy` in
front of the reference filesystem server. Run by tests/mcp_python.rs, which checks what it prints
(one JSON object) and the files on disk.

    python3 mcp_client.py MODE FOLDER http://127.0.0.1:PORT/mcp
    python3 mcp_client.py MODE FOLDER COMMAND [ARGS...]

MODE is the SDK's connect mode: "legacy" (initialize, 2025-11-25) or "auto" (server/discover,
2026-07-28). The proxy is reached at the URL (Streamable HTTP), or started as COMMAND (stdio).
The user approves a write only when its path names "approved".
"""

import asyncio
import json
import sys

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters


def text(result):
    return "\n".join(c.text for c in result.content if getattr(c, "text", None) is not None)


async def main(mode, folder, server):
    asked = []

    async def user(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"approve": "approved" in params.message})

    if server[0].startswith("http://"):
        target = server[0]
    else:
        target = StdioServerParameters(command=server[0], args=server[1:])
    report = {}
    async with Client(target, mode=mode, elicitation_callback=user) as client:
        report["protocol"] = client.session.protocol_version if hasattr(client.session, "protocol_version") else None
        tools = await client.list_tools()
        report["tools"] = sorted(t.name for t in tools.tools)

        read = await client.call_tool("read_text_file", {"path": f"{folder}/notes.txt"})
        report["read"] = {"error": bool(read.is_error), "text": text(read)}

        denied = await client.call_tool(
            "write_file", {"path": f"{folder}/protected/keep.txt", "content": "overwritten"}
        )
        report["protected"] = {"error": bool(denied.is_error), "text": text(denied)}

        approved = await client.call_tool(
            "write_file", {"path": f"{folder}/outbox/approved.txt", "content": "sent"}
        )
        report["approved"] = {"error": bool(approved.is_error), "text": text(approved)}

        refused = await client.call_tool(
            "write_file", {"path": f"{folder}/outbox/other.txt", "content": "sent"}
        )
        report["refused"] = {"error": bool(refused.is_error), "text": text(refused)}
    report["asked"] = len(asked)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
