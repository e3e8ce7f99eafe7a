//! The rules guard through a real engine and real YAML: each matcher with the evasions aimed at
//! it, the first rule deciding, defaults, values that fail to parse, policy mistakes pointed at,
//! and a property: rewriting a path in an equivalent way never changes the decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_config::PolicyLoader;
use halt_core::{CallContext, DecisionKind};
use halt_engine::Engine;
use proptest::prelude::*;
use serde_json::{Value, json};

fn engine(yaml: &str) -> Engine {
    let mut loader = PolicyLoader::new();
    if loader.registry().get("rules").is_none() {
        loader.register(halt_guards_rules::factory()).unwrap();
    }
    loader.load_str(yaml, "policy.yaml").unwrap().build_engine().unwrap()
}

fn decide(engine: &Engine, function: &str, args: Value) -> DecisionKind {
    let call = CallContext::new(function).with_arguments(args).unwrap();
    engine.evaluate_blocking(call).decision()
}

const FILES: &str = r#"
guards:
  rules:
    rules:
      - name: no-protected-writes
        functions: ["write_file", "delete_file"]
        where: {field: path, path: {glob: ["protected/**", "/etc/**", "**/.env"]}}
        decision: deny
        reason: "writes to {field} under a protected place are refused"
      - name: workspace-writes
        functions: ["write_file"]
        where: {field: path, path: {glob: ["/workspace/**"]}}
        decision: allow
      - name: other-writes
        functions: ["write_file"]
        decision: require_approval
"#;

#[test]
fn paths_are_compared_as_a_tool_resolves_them() {
    let e = engine(FILES);
    for evasion in [
        "protected/x",
        "a/../protected/x",
        "./protected//x",
        "PROTECTED\\x",
        "%2e%2e/protected/x".replacen("%2e%2e/", "a/%2e%2e/", 1).as_str(),
        "protected%2fx",
        "/etc/passwd",
        "/tmp/../etc/shadow",
        "/ETC/hosts",
        "/srv/app/.env",
        "/srv/app/.ENV",
    ] {
        assert_eq!(decide(&e, "write_file", json!({"path": evasion})), DecisionKind::Deny, "{evasion}");
    }
    assert_eq!(decide(&e, "write_file", json!({"PATH": "protected/x"})), DecisionKind::Deny, "a key in capitals");
    assert_eq!(decide(&e, "write_file", json!({"path": "/workspace/out.txt"})), DecisionKind::Allow);
    // A path that climbs above its root never matches an allow (and a deny matches it).
    assert_eq!(decide(&e, "write_file", json!({"path": "/workspace/../../etc/x"})), DecisionKind::Deny);
    assert_eq!(decide(&e, "write_file", json!({"path": "../workspace/x"})), DecisionKind::Deny);
    assert_eq!(decide(&e, "write_file", json!({"path": "/workspace/a/../../tmp/x"})), DecisionKind::RequireApproval);
    assert_eq!(decide(&e, "write_file", json!({"path": 42})), DecisionKind::RequireApproval, "wrong type: no match");
    assert_eq!(decide(&e, "read_file", json!({"path": "/etc/passwd"})), DecisionKind::Allow, "not a covered function");
    let o = e.evaluate_blocking(
        CallContext::new("write_file").with_arguments(json!({"path": "/etc/secret-token"})).unwrap(),
    );
    assert_eq!(o.denial_reasons(), ["writes to path under a protected place are refused"]);
}

const SSRF: &str = r#"
guards:
  rules:
    rules:
      - name: no-internal
        functions: ["http_*", "fetch_url"]
        where: {field: url, url: {private_network: true}}
        decision: deny
      - name: https-only-to-partners
        functions: ["http_*"]
        where:
          all:
            - {field: url, url: {scheme: [https], host: ["*.partner.com", "partner.com"]}}
        decision: allow
      - functions: ["http_*"]
        decision: require_approval
"#;

#[test]
fn urls_resolve_every_address_form() {
    let e = engine(SSRF);
    for evasion in [
        "http://127.1/admin",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/",
        "http://LOCALHOST/",
        "http://[fd12::1]/",
        "http://partner.com@127.0.0.1/",
    ] {
        assert_eq!(decide(&e, "http_get", json!({"url": evasion})), DecisionKind::Deny, "{evasion}");
    }
    assert_eq!(decide(&e, "http_get", json!({"url": "https://api.partner.com/v1"})), DecisionKind::Allow);
    assert_eq!(
        decide(&e, "http_get", json!({"url": "https://partner.com@evil.com/"})),
        DecisionKind::RequireApproval,
        "the userinfo trick: the host is evil.com"
    );
    assert_eq!(
        decide(&e, "http_get", json!({"url": "http://api.partner.com/"})),
        DecisionKind::RequireApproval,
        "scheme"
    );
    assert_eq!(decide(&e, "http_get", json!({"url": "not a url"})), DecisionKind::Deny, "unreadable: a deny matches");
    assert_eq!(decide(&e, "http_get", json!({"url": "https://example.org"})), DecisionKind::RequireApproval);
}

const MAIL: &str = r#"
guards:
  rules:
    default: deny
    rules:
      - functions: ["send_email"]
        where: {field: "to.*", email_domain: ["example.com", "*.example.com"]}
        decision: allow
      - functions: ["send_email"]
        decision: require_approval
      - functions: ["get_*"]
        decision: allow
"#;

#[test]
fn email_domains_fold_case_and_trailing_dots_and_every_recipient_counts() {
    let e = engine(MAIL);
    for ok in [
        json!(["a@example.com"]),
        json!(["A@EXAMPLE.COM"]),
        json!(["b@mail.example.com."]),
        json!(["Bob <bob@Example.com>"]),
    ] {
        assert_eq!(decide(&e, "send_email", json!({"to": ok})), DecisionKind::Allow, "{ok}");
    }
    for outside in [
        json!(["a@example.com", "x@evil.com"]),
        json!(["a@example.com.evil.com"]),
        json!(["a@evil.com#@example.com"]),
        json!(["a@b@example.com"]),
        json!([]),
        json!("a@example.com"),
    ] {
        assert_eq!(decide(&e, "send_email", json!({"to": outside})), DecisionKind::RequireApproval, "{outside}");
    }
    assert_eq!(decide(&e, "get_inbox", json!({})), DecisionKind::Allow);
    assert_eq!(decide(&e, "delete_inbox", json!({})), DecisionKind::Deny, "default: deny");
}

const MONEY: &str = r#"
guards:
  rules:
    rules:
      - functions: ["refund"]
        where: {field: amount, ">": 500}
        decision: deny
        reason: "refunds above 500 are refused ({field})"
      - functions: ["refund"]
        where: {all: [{field: amount, ">=": 0}, {field: amount, "<=": 100}]}
        decision: allow
      - functions: ["refund"]
        decision: require_approval
"#;

#[test]
fn numbers_read_at_money_precision_and_bad_ones_never_allow() {
    let e = engine(MONEY);
    for (amount, want) in [
        (json!(500.01), DecisionKind::Deny),
        (json!("1e3"), DecisionKind::Deny),
        (json!(" 600 "), DecisionKind::Deny),
        (json!(500), DecisionKind::RequireApproval),
        (json!(99.999999), DecisionKind::Allow),
        (json!("100"), DecisionKind::Allow),
        (json!(-20), DecisionKind::RequireApproval),
        (json!("NaN"), DecisionKind::Deny),
        (json!("12 dollars"), DecisionKind::Deny),
        (json!(true), DecisionKind::RequireApproval),
    ] {
        assert_eq!(decide(&e, "refund", json!({"amount": amount})), want, "{amount}");
    }
    assert_eq!(decide(&e, "refund", json!({})), DecisionKind::RequireApproval, "missing: no rule on it matches");
}

const SQL: &str = r#"
guards:
  rules:
    rules:
      - functions: ["run_sql"]
        where: {field: query, regex: '(?i)^\s*(drop|truncate|alter)\b'}
        decision: deny
      - functions: ["run_sql"]
        where:
          any:
            - {field: mode, one_of: ["read", "explain"]}
            - {not: {field: write, exists: true}}
        decision: allow
      - functions: ["run_sql"]
        decision: require_approval
"#;

#[test]
fn regex_one_of_exists_and_not() {
    let e = engine(SQL);
    assert_eq!(decide(&e, "run_sql", json!({"query": "  DROP TABLE users"})), DecisionKind::Deny);
    assert_eq!(decide(&e, "run_sql", json!({"query": "select 1", "mode": "read", "write": true})), DecisionKind::Allow);
    assert_eq!(decide(&e, "run_sql", json!({"query": "select 1"})), DecisionKind::Allow, "no `write` field");
    assert_eq!(decide(&e, "run_sql", json!({"query": "update t", "write": true})), DecisionKind::RequireApproval);
}

#[test]
fn policy_mistakes_are_pointed_at() {
    let load = |yaml: &str| {
        let mut loader = PolicyLoader::new();
        if loader.registry().get("rules").is_none() {
            loader.register(halt_guards_rules::factory()).unwrap();
        }
        loader.load_str(yaml, "p.yaml").unwrap_err().to_string()
    };
    let head = "guards:\n  rules:\n    rules:\n      - functions: [f]\n        decision: deny\n        where: ";
    for (condition, expected) in [
        ("{field: x, pth: {glob: [a]}}", "unknown field `pth` at guards.rules; did you mean `path`?"),
        ("{field: x, path: {glob: [\"a[\"]}}", "rules[0].where.path.glob"),
        ("{field: x, regex: \"a{1000}{1000}\"}", "rules[0].where.regex"),
        ("{field: x, \">\": \"lots\"}", "invalid `rules[0].where.>`: must be a number"),
        ("{field: x}", "needs a matcher"),
        ("{field: x, all: []}", "exactly one of"),
        ("{field: \"a..b\", exists: true}", "is not a dotted path"),
    ] {
        let err = load(&format!("{head}{condition}\n"));
        assert!(err.contains(expected), "{condition}: {err}");
        assert!(err.starts_with("p.yaml:"), "with its position: {err}");
    }
    assert!(
        load("guards:\n  rules:\n    rules:\n      - functions: [f]\n        decision: maybe\n")
            .contains("unknown variant `maybe`")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Writing a path another way (`./`, doubled or trailing separators, backslashes, a detour
    /// through `x/..`, case, percent-encoding) never changes its decision.
    #[test]
    fn equivalent_paths_decide_alike(
        segments in prop::collection::vec(prop::sample::select(vec!["etc", "protected", "workspace", "tmp", "a", "B", ".env"]), 1..5),
        absolute in any::<bool>(),
        rewrites in prop::collection::vec(0u8..6, 0..4),
    ) {
        let e = engine(FILES);
        let plain = format!("{}{}", if absolute { "/" } else { "" }, segments.join("/"));
        let mut other = plain.clone();
        for r in rewrites {
            other = match r {
                0 => other.replacen('/', "/./", 1),
                1 => other.replacen('/', "//", 1),
                2 => other.replace('/', "\\"),
                3 => other.replacen('/', "/zz/../", 1),
                4 => other.to_uppercase(),
                _ => other.replacen('/', "%2f", 1),
            };
        }
        let a = decide(&e, "write_file", json!({"path": plain}));
        let b = decide(&e, "write_file", json!({"path": other}));
        prop_assert_eq!(a, b, "{} vs {}", plain, other);
    }
}
