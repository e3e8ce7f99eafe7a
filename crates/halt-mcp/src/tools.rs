//! `tools/list`: the digest of each tool's definition, and the tools an agent is not shown.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use halt_core::{Call, CallContext, DecisionKind};
use rmcp::model::{ListToolsResult, Tool};
use sha2::{Digest, Sha256};

use crate::Shared;

/// Each tool's definition and its digest, by name, as the server last listed it.
#[derive(Default)]
pub(crate) struct Tools(Mutex<HashMap<String, (String, Tool)>>);

impl Tools {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Tool)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the definitions the server listed.
    pub(crate) fn record(&self, tools: &[Tool]) {
        let mut known = self.lock();
        for t in tools {
            known.insert(t.name.to_string(), (digest(t), t.clone()));
        }
    }

    /// The digest of a tool's definition, if the server listed it.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.lock().get(name).map(|(d, _)| d.clone())
    }

    /// Forgets every definition (the server was started again).
    pub(crate) fn forget(&self) {
        self.lock().clear();
    }

    /// A tool's definition, if the server listed it.
    pub(crate) fn definition(&self, name: &str) -> Option<Tool> {
        self.lock().get(name).map(|(_, t)| t.clone())
    }
}

/// A digest of what a tool is to the model: its name, description and input schema (as JSON
/// with sorted keys, so that the server's key order does not matter), as `mcp-tool:<sha256>`.
pub(crate) fn digest(tool: &Tool) -> String {
    let definition = serde_json::json!({
        "name": tool.name,
        "description": tool.description,
        "inputSchema": serde_json::Value::Object((*tool.input_schema).clone()),
    });
    // serde_json's maps keep their keys sorted: the text is canonical.
    let text = definition.to_string();
    format!("mcp-tool:{:x}", Sha256::digest(text.as_bytes()))
}

/// The digest of the tool `name`'s definition: as last listed, or from a new listing when the
/// client calls a tool it never listed. `None` when the server does not list it.
pub(crate) async fn digest_of(shared: &Shared, name: &str) -> Option<String> {
    if let Some(d) = shared.tools.get(name) {
        return Some(d);
    }
    let tools = shared.live_upstream().await.list_all_tools().await.ok()?;
    shared.tools.record(&tools);
    shared.tools.get(name)
}

/// A listing on its way to the client: recorded, and without the tools a visibility guard
/// denies to `agent` when hiding is on.
pub(crate) async fn listed(shared: &Shared, list: &mut ListToolsResult, agent: Option<&str>) {
    shared.tools.record(&list.tools);
    if !shared.options.hide_denied_tools || shared.options.visibility_guards.is_empty() {
        return;
    }
    let mut shown = Vec::with_capacity(list.tools.len());
    for tool in std::mem::take(&mut list.tools) {
        if visible(shared, &tool.name, agent).await {
            shown.push(tool);
        }
    }
    list.tools = shown;
}

/// Whether no visibility guard denies `agent` a call of `tool` (with no arguments). A guard that
/// fails or times out hides the tool: what cannot be checked is not offered.
async fn visible(shared: &Shared, tool: &str, agent: Option<&str>) -> bool {
    let mut ctx = CallContext::new(tool);
    ctx.agent_id = agent.map(str::to_owned);
    let function = halt_core::names::normalize(tool);
    let now = shared.engine.clock().now();
    let store = shared.engine.store().as_ref();
    for guard in &shared.options.visibility_guards {
        let call = Call::new(&ctx, &function, now, store, now);
        if !guard.applies(&call) {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), guard.evaluate(&call)).await {
            Ok(Ok(d)) if d.kind() != DecisionKind::Deny => {}
            _ => return false,
        }
    }
    true
}
