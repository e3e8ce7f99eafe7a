//! The JSON Schema of a policy file, for editors.

use halt_core::GuardRegistry;
use serde_json::{Map, Value, json};

use crate::{ApprovalSettings, AuditSettings, EngineSettings, ServerSettings, StoreSettings};

/// The JSON Schema (2020-12) of a policy file whose guards are the types `registry` knows.
#[must_use]
pub fn policy_schema(registry: &GuardRegistry) -> Value {
    let mut defs = Map::new();
    let mut by_kind = Map::new();
    let mut items = Vec::new();
    for kind in registry.kinds() {
        let Some(factory) = registry.get(&kind) else { continue };
        let mut schema = factory.schema().to_value();
        hoist_defs(&mut schema, &mut defs);
        let enabled = json!({"type": "boolean", "description": "false switches the guard off", "default": true});
        let mut in_map = schema.clone();
        if let Some(props) = in_map.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("enabled".into(), enabled.clone());
        }
        by_kind.insert(kind.clone(), in_map);
        let mut in_list = schema;
        if let Some(props) = in_list.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("enabled".into(), enabled);
            props.insert("type".into(), json!({"const": kind}));
            props.insert("name".into(), json!({"type": "string", "description": "unique name of this guard"}));
        }
        if let Some(obj) = in_list.as_object_mut() {
            obj.insert("required".into(), json!(["type"]));
        }
        items.push(in_list);
    }
    let mut engine = schemars::schema_for!(EngineSettings).to_value();
    hoist_defs(&mut engine, &mut defs);
    let mut store = schemars::schema_for!(StoreSettings).to_value();
    hoist_defs(&mut store, &mut defs);
    let mut approvals = schemars::schema_for!(ApprovalSettings).to_value();
    hoist_defs(&mut approvals, &mut defs);
    let mut audit = schemars::schema_for!(AuditSettings).to_value();
    hoist_defs(&mut audit, &mut defs);
    let mut server = schemars::schema_for!(ServerSettings).to_value();
    hoist_defs(&mut server, &mut defs);
    let mut mcp = schemars::schema_for!(crate::McpSettings).to_value();
    hoist_defs(&mut mcp, &mut defs);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "AgentHalt policy",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "guards": {
                "description": "Guard type -> settings, or a list of guards with a `type` and a `name`",
                "oneOf": [
                    {"type": "object", "additionalProperties": false, "properties": by_kind},
                    {"type": "array", "items": {"oneOf": items}}
                ]
            },
            "engine": engine,
            "store": store,
            "approvals": approvals,
            "audit": audit,
            "server": server,
            "mcp": mcp
        },
        "$defs": defs
    })
}

/// Moves a sub-schema's `$defs` to the top, where its `#/$defs/...` references point.
fn hoist_defs(schema: &mut Value, defs: &mut Map<String, Value>) {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        if let Some(Value::Object(d)) = obj.remove("$defs") {
            defs.extend(d);
        }
    }
}
