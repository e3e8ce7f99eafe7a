//! The `mcp:` section: how `agenthalt mcp-proxy` treats the MCP traffic it stands in.

use serde::{Deserialize, Serialize};

/// How the MCP proxy treats the calls it passes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// Leave out of `tools/list` the tools the policy's scope guards deny to the agent.
    pub hide_denied_tools: bool,
    /// The agent the calls come from. Without it, the MCP client's own name.
    pub agent_id: Option<String>,
    /// Ask the MCP client's user about calls that need a human, where the client can ask
    /// (form elicitation on 2025-11-25, `input_required` on 2026-07-28), instead of
    /// `approvals.handler`. Only for clients that show the question to a person.
    pub ask_client: bool,
    /// The browser origins allowed to call `mcp-proxy --listen` (`http://localhost:*`). A
    /// request with any other `Origin` is refused; programs send none.
    pub allowed_origins: Vec<String>,
    /// Start the MCP server again when it exits (at most 5 times a minute), rather than stop.
    pub restart_server: bool,
}

/// Checks what serde cannot: each allowed origin is `null` or a scheme and a host
/// (`http://localhost:*`, `https://app.example.com:443`), as a browser sends it.
pub(crate) fn check(mcp: &McpSettings) -> Result<(), (Vec<String>, String)> {
    for (i, origin) in mcp.allowed_origins.iter().enumerate() {
        let host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        let valid = origin == "null" || host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' ']));
        if !valid {
            let path = vec!["mcp".to_owned(), "allowed_origins".to_owned(), i.to_string()];
            return Err((path, "must be `null` or a scheme and a host, as `http://localhost:*` (no path)".into()));
        }
    }
    Ok(())
}
