//! Loading policies: the seed YAML, the list form, env interpolation, third-party guards, and
//! every class of error with its message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_config::{PolicyLoader, policy_schema};
use halt_core::{CallContext, DecisionKind, FactoryError, TypedFactory, async_trait};
use halt_engine::Mode;
use serde_json::json;

const SEED: &str = r#"
# agenthalt.yaml
guards:
  budget:
    max_daily_spend: 10.0
    warn_threshold: 0.8
    cost_estimator:
      gpt4_call: 0.03
      web_search: 0.01

  deletion:
    allow_patterns: ["temp_*", "draft_*"]
    protected_resources: ["inbox", "sent"]
    require_approval_always: true

  purchase:
    max_single_purchase: 100.0
    require_approval_above: 50.0
    blocked_categories: ["luxury", "gambling"]

  rate_limit:
    max_calls_per_minute: 30
    max_identical_calls: 3

  scope:
    deny_functions: ["drop_*", "format_*"]
"#;

fn err(yaml: &str) -> String {
    PolicyLoader::new().load_str(yaml, "p.yaml").unwrap_err().to_string()
}

#[test]
fn the_seed_policy_loads_and_decides() {
    let policy = PolicyLoader::new().load_str(SEED, "agenthalt.yaml").unwrap();
    let kinds: Vec<&str> = policy.guards.iter().map(|g| g.kind.as_str()).collect();
    assert_eq!(kinds, ["budget", "deletion", "purchase", "rate_limit", "scope"]);
    let engine = policy.build_engine().unwrap();
    let call = |name: &str, args: serde_json::Value| {
        engine.evaluate_blocking(CallContext::new(name).with_arguments(args).unwrap())
    };
    assert_eq!(call("drop_table", json!({})).decision(), DecisionKind::Deny);
    assert_eq!(call("delete_email", json!({"email_id": "inbox"})).decision(), DecisionKind::Deny);
    assert_eq!(call("delete_email", json!({"email_id": "temp_1"})).decision(), DecisionKind::RequireApproval);
    assert_eq!(call("buy", json!({"amount": 75})).decision(), DecisionKind::RequireApproval);
    assert_eq!(call("web_search", json!({"q": "x"})).decision(), DecisionKind::Allow);
}

#[test]
fn json_is_yaml_too() {
    let policy = PolicyLoader::new().load_str(r#"{"guards": {"scope": {"deny_functions": ["x"]}}}"#, "p.json").unwrap();
    assert_eq!(policy.guards.len(), 1);
    assert!(PolicyLoader::new().load_str("", "empty.yaml").unwrap().guards.is_empty());
    assert!(PolicyLoader::new().load_str("guards: {}", "p.yaml").unwrap().guards.is_empty());
}

#[test]
fn the_list_form_allows_one_type_several_times() {
    let yaml = "
guards:
  - type: budget
    name: llm_budget
    max_daily_spend: 1
    cost_field: llm_cost
  - type: budget
    name: api_budget
    max_daily_spend: 5
  - type: scope
    deny_functions: [drop_*]
    enabled: false
";
    let policy = PolicyLoader::new().load_str(yaml, "p.yaml").unwrap();
    let names: Vec<&str> = policy.guards.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["llm_budget", "api_budget", "scope"]);
    assert!(!policy.guards[2].enabled);
    let engine = policy.build_engine().unwrap();
    assert_eq!(engine.guards().iter().filter(|g| g.enabled).count(), 2);
    let o = engine.evaluate_blocking(CallContext::new("drop_x").with_arguments(json!({"llm_cost": 2})).unwrap());
    assert_eq!(o.denial_reasons().len(), 1, "scope is disabled; llm_budget denies: {:?}", o.decisions());
    assert_eq!(o.final_decision().unwrap().guard(), "llm_budget");
}

#[test]
fn enabled_false_disables_in_the_map_form() {
    let policy =
        PolicyLoader::new().load_str("guards:\n  scope:\n    enabled: false\n    deny_functions: [x]\n", "p").unwrap();
    let engine = policy.build_engine().unwrap();
    assert!(engine.evaluate_blocking(CallContext::new("x")).is_allowed());
}

#[test]
fn the_engine_section_sets_mode_and_timeouts() {
    let yaml = "engine:\n  mode: monitor\n  guard_timeout_seconds: 0.5\nguards:\n  scope:\n    deny_functions: [x]\n";
    let policy = PolicyLoader::new().load_str(yaml, "p").unwrap();
    assert_eq!(policy.engine.mode, Mode::Monitor);
    let engine = policy.build_engine().unwrap();
    let o = engine.evaluate_blocking(CallContext::new("x"));
    assert!(o.is_allowed() && !o.enforced());
    assert_eq!(o.decision(), DecisionKind::Deny);
    assert_eq!(
        err("engine:\n  mode: shadow\n"),
        "p.yaml:2:3: unknown variant `shadow`, expected `enforce` or `monitor` at engine.mode"
    );
    assert_eq!(
        err("engine:\n  guard_timeout_seconds: 0\n"),
        "p.yaml:2:3: must be a positive number of seconds at engine.guard_timeout_seconds"
    );
    // More seconds than a duration holds: an error when loaded, not a panic when built.
    assert_eq!(
        err("engine:\n  settle_window_seconds: 1e300\n"),
        "p.yaml:2:3: must be a positive number of seconds at engine.settle_window_seconds"
    );
    assert_eq!(err("engine:\n  modee: monitor\n"), "p.yaml:2:3: unknown field `modee` at engine; did you mean `mode`?");
}

#[test]
fn environment_variables_are_interpolated() {
    let env = |name: &str| (name == "DAILY").then(|| "2.5".to_owned());
    let yaml = "guards:\n  budget:\n    max_daily_spend: ${DAILY}\n";
    let policy = PolicyLoader::new().load_with_env(yaml, "p.yaml", &env).unwrap();
    assert_eq!(policy.guards[0].guard.describe()["max_daily_spend"], json!(2.5));
    let e = PolicyLoader::new()
        .load_with_env("guards:\n  budget:\n    max_daily_spend: ${MISSING}\n", "p.yaml", &env)
        .unwrap_err();
    assert_eq!(e.to_string(), "p.yaml:3:5: environment variable `MISSING` is not set at guards.budget.max_daily_spend");
    // Values are replaced, never text: a value cannot add YAML of its own, and comments are
    // left alone (an unset variable there is no error).
    let env = |name: &str| match name {
        "AGENTS" => Some("x\n  read_only_mode: true".to_owned()),
        "EVIL" => Some("1\nguards: {}".to_owned()),
        _ => None,
    };
    let yaml = "# ${NOT_SET} in a comment\nguards:\n  scope:\n    deny_functions: [\"drop_*\", \"${AGENTS}\"]\n";
    let policy = PolicyLoader::new().load_with_env(yaml, "p.yaml", &env).unwrap();
    let settings = policy.guards[0].guard.describe();
    assert_eq!(settings["deny_functions"], json!(["drop_*", "x\n  read_only_mode: true"]));
    assert_eq!(settings["read_only_mode"], json!(false));
    let e = PolicyLoader::new()
        .load_with_env("guards:\n  budget:\n    max_daily_spend: ${EVIL}\n", "p.yaml", &env)
        .unwrap_err();
    assert!(e.to_string().contains("max_daily_spend"), "{e}");
}

#[test]
fn unknown_keys_and_sections_suggest_the_right_one() {
    assert_eq!(
        err("guards:\n  budget:\n    max_daily_spnd: 1\n"),
        "p.yaml:3:5: unknown field `max_daily_spnd` at guards.budget; did you mean `max_daily_spend`?"
    );
    assert_eq!(err("guard:\n  budget: {}\n"), "p.yaml:1:1: unknown section `guard` at guard; did you mean `guards`?");
    assert_eq!(
        err("guards:\n  budgit:\n    max_daily_spend: 1\n"),
        "p.yaml:2:3: unknown guard type `budgit` (known: budget, deletion, purchase, rate_limit, rules, scope, sensitive_data) at guards.budgit; did you mean `budget`?"
    );
    assert_eq!(err("guards:\n  scope:\n    zzz: 1\n"), "p.yaml:3:5: unknown field `zzz` at guards.scope");
    assert_eq!(
        err("guards:\n  - type: budget\n    max_daily_spend: 1\n  - type: purchase\n    blocked_categorys: []\n"),
        "p.yaml:5:5: unknown field `blocked_categorys` at guards[1]; did you mean `blocked_categories`?"
    );
}

#[test]
fn wrong_types_and_impossible_values() {
    assert_eq!(
        err("guards:\n  rate_limit:\n    max_calls_per_minute: lots\n"),
        "p.yaml:3:5: invalid type: string \"lots\", expected u32 at guards.rate_limit.max_calls_per_minute"
    );
    assert_eq!(
        err("guards:\n  budget:\n    max_daily_spend: -1\n"),
        "p.yaml:3:5: `-1` is negative at guards.budget.max_daily_spend"
    );
    assert_eq!(
        err("guards:\n  budget:\n    warn_threshold: 1.5\n"),
        "p.yaml:3:5: invalid `warn_threshold`: 1.5 is not in (0, 1] at guards.budget.warn_threshold"
    );
    assert_eq!(
        err("guards:\n  scope:\n    deny_functions: [\"[abc\"]\n"),
        "p.yaml:3:5: invalid `deny_functions`: invalid glob pattern `[abc`: unclosed character class; missing ']' at guards.scope.deny_functions"
    );
    assert_eq!(
        err("guards:\n  scope: 3\n"),
        "p.yaml:2:3: guard settings must be a mapping, not a number at guards.scope"
    );
    assert_eq!(
        err("guards:\n  scope:\n    enabled: maybe\n"),
        "p.yaml:3:5: `enabled` must be true or false, not a string at guards.scope.enabled"
    );
    assert_eq!(err("guards: 5\n"), "p.yaml:1:1: `guards` must be a mapping or a list, not a number at guards");
    assert_eq!(err("- 1\n"), "p.yaml: a policy must be a mapping, not a list");
    assert_eq!(err("guards:\n  - max_daily_spend: 1\n"), "p.yaml:2:3: missing `type` at guards[0]");
    assert_eq!(
        err("guards:\n  - type: scope\n  - type: scope\n"),
        "p.yaml:3:3: two guards are named `scope`; give one a `name` at guards[1]"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = err("guards:\n  budget: [1, 2\n");
    assert!(e.starts_with("p.yaml:3:1: invalid YAML:"), "{e}");
}

/// A third party's guard, configured from the same file.
#[derive(Debug)]
struct BusinessHours {
    name: String,
    start: u8,
}

#[async_trait]
impl halt_core::Guard for BusinessHours {
    fn name(&self) -> &str {
        &self.name
    }
    async fn evaluate(&self, _: &halt_core::Call<'_>) -> Result<halt_core::Decision, halt_core::GuardError> {
        Ok(halt_core::Decision::require_approval(format!("outside hours (opens at {})", self.start)))
    }
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct HoursConfig {
    start_hour: u8,
}

#[test]
fn a_third_party_guard_is_configured_like_a_built_in_one() {
    let mut loader = PolicyLoader::new();
    loader
        .register(TypedFactory::new("acme_business_hours", |name: &str, c: HoursConfig| {
            if c.start_hour > 23 {
                return Err(FactoryError::invalid("start_hour", "must be 0..=23"));
            }
            Ok(BusinessHours { name: name.to_owned(), start: c.start_hour })
        }))
        .unwrap();
    let policy = loader.load_str("guards:\n  acme_business_hours:\n    start_hour: 9\n", "p").unwrap();
    let o = policy.build_engine().unwrap().evaluate_blocking(CallContext::new("anything"));
    assert_eq!(o.approval_reasons(), ["outside hours (opens at 9)"]);
    let e = loader.load_str("guards:\n  acme_business_hours:\n    start_hour: 30\n", "p").unwrap_err();
    assert_eq!(e.to_string(), "p:3:5: invalid `start_hour`: must be 0..=23 at guards.acme_business_hours.start_hour");
    assert!(
        policy_schema(loader.registry())["properties"]["guards"]["oneOf"][0]["properties"]["acme_business_hours"]
            .is_object()
    );
}

#[test]
fn the_schema_covers_every_guard_and_resolves_its_references() {
    let schema = policy_schema(PolicyLoader::new().registry());
    let by_kind = &schema["properties"]["guards"]["oneOf"][0]["properties"];
    for kind in ["budget", "deletion", "purchase", "rate_limit", "scope", "sensitive_data"] {
        assert!(by_kind[kind]["properties"]["enabled"].is_object(), "{kind}");
    }
    let text = serde_json::to_string(&schema).unwrap();
    for reference in text.split("\"$ref\":\"#/$defs/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schema["$defs"][name].is_object(), "dangling reference to {name}");
    }
}

#[cfg(not(feature = "sled"))]
#[test]
fn a_sled_store_needs_the_sled_feature() {
    assert_eq!(err("store:\n  sled:\n    path: /tmp/x\n"), "p.yaml:2:3: this build has no sled support at store.sled");
}

#[cfg(feature = "sled")]
#[test]
fn the_store_section() {
    let p = PolicyLoader::new().load_str("store: memory\n", "p").unwrap();
    assert_eq!(p.store, Some(halt_config::StoreSettings::Memory));
    assert_eq!(PolicyLoader::new().load_str("guards: {}\n", "p").unwrap().store, None, "not said: the program picks");
    let dir = std::env::temp_dir().join(format!("halt-config-sled-{}", std::process::id()));
    let yaml =
        format!("store:\n  sled:\n    path: {}\n    durability: relaxed\n    flush_every_ms: 100\n", dir.display());
    let p = PolicyLoader::new().load_str(&yaml, "p").unwrap();
    let Some(halt_config::StoreSettings::Sled(s)) = &p.store else { panic!("{:?}", p.store) };
    assert_eq!((s.durability, s.flush_every_ms), (halt_config::DurabilitySetting::Relaxed, 100));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = rt.block_on(p.store.as_ref().unwrap().open()).unwrap();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        err("store:\n  sled:\n    path: /tmp/x\n    durabilty: strict\n"),
        "p.yaml:4:5: unknown field `durabilty` at store.sled; did you mean `durability`?"
    );
    assert_eq!(
        err("store: redis\n"),
        "p.yaml:1:1: invalid type: unit variant, expected newtype variant at store.redis"
    );
    let e = err("store: mysql\n");
    assert!(e.contains("unknown variant `mysql`"), "{e}");
    assert_eq!(
        err("store:\n  redis:\n    url: http://x\n"),
        "p.yaml:3:5: must start with redis://, rediss:// or unix:// at store.redis.url"
    );
    assert_eq!(err("store:\n  sled:\n    path: \"\"\n"), "p.yaml:3:5: must not be empty at store.sled.path");
}

#[test]
fn the_server_section_checks_its_tokens() {
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let ok = format!(
        "server:\n  bind: 0.0.0.0:9000\n  tokens:\n    - {{name: bot, role: agent, sha256: {hex}}}\n    - {{name: alice, role: approver, token: \"${{ALICE}}\"}}\n"
    );
    let env = |k: &str| (k == "ALICE").then(|| "a-long-enough-secret".to_owned());
    let p = PolicyLoader::new().load_with_env(&ok, "p.yaml", &env).unwrap();
    assert_eq!(p.server.bind.as_deref(), Some("0.0.0.0:9000"));
    assert_eq!(p.server.tokens[0].digest(), hex);
    assert_eq!(p.server.tokens[1].role, halt_config::Role::Approver);
    assert_eq!(p.server.tokens[1].digest().len(), 64);
    // Who may call the server is no part of the policy's version.
    let bare = PolicyLoader::new().load_str("", "p.yaml").unwrap();
    assert_eq!(p.version, bare.version);

    for (yaml, wanted) in [
        ("server:\n  tokens:\n    - {name: a, role: agent}\n", "exactly one of `sha256` and `token`"),
        ("server:\n  tokens:\n    - {name: a, role: agent, sha256: abc}\n", "64 hex digits"),
        ("server:\n  tokens:\n    - {name: a, role: agent, token: short}\n", "at least 16 characters"),
        ("server:\n  tokens:\n    - {name: a, role: root, token: aaaaaaaaaaaaaaaaaaaa}\n", "unknown variant `root`"),
        (
            "server:\n  tokens:\n    - {name: a, role: agent, token: aaaaaaaaaaaaaaaaaaaa}\n    - {name: a, role: viewer, token: bbbbbbbbbbbbbbbbbbbb}\n",
            "names two tokens",
        ),
        (
            "server:\n  tokens:\n    - {name: a, role: agent, token: aaaaaaaaaaaaaaaaaaaa}\n    - {name: b, role: viewer, token: aaaaaaaaaaaaaaaaaaaa}\n",
            "the same token is given twice",
        ),
        (
            "server:\n  tokens:\n    - {name: a, role: viewer, token: aaaaaaaaaaaaaaaaaaaa, agent_id: x}\n",
            "only an agent",
        ),
        ("server:\n  max_body_bytes: 10\n", "at least 1024"),
        ("server:\n  max_wait_seconds: -1\n", "number of seconds"),
        ("server:\n  bnd: x\n", "unknown field `bnd`"),
    ] {
        let e = err(yaml);
        assert!(e.contains(wanted), "{yaml}: {e}");
    }
}

#[test]
fn the_mcp_section_says_how_the_proxy_asks_and_lists() {
    let p = PolicyLoader::new()
        .load_str(
            "mcp:\n  hide_denied_tools: true\n  ask_client: true\n  agent_id: desk\n  allowed_origins: [\"http://localhost:*\"]\n",
            "p.yaml",
        )
        .unwrap();
    assert!(p.mcp.hide_denied_tools && p.mcp.ask_client && !p.mcp.restart_server);
    assert_eq!(p.mcp.allowed_origins, ["http://localhost:*"]);
    assert_eq!(p.mcp.agent_id.as_deref(), Some("desk"));
    let bare = PolicyLoader::new().load_str("", "p.yaml").unwrap();
    assert!(!bare.mcp.ask_client, "the client's user is asked only when the policy says so");
    for (yaml, wanted) in [
        ("mcp:\n  ask_clients: true\n", "unknown field `ask_clients`"),
        ("mcp:\n  ask_client: \"yes\"\n", "invalid type"),
        ("mcp: [1]\n", "invalid type"),
        ("mcp:\n  allowed_origins: http://localhost\n", "invalid type"),
        ("mcp:\n  allowed_origins: [\"localhost:3000\"]\n", "a scheme and a host"),
        ("mcp:\n  allowed_origins: [\"http://a.example/app\"]\n", "no path"),
        ("mcp:\n  allowed_origins: [\"https://\"]\n", "a scheme and a host"),
    ] {
        let e = err(yaml);
        assert!(e.contains(wanted), "{yaml}: {e}");
    }
}
