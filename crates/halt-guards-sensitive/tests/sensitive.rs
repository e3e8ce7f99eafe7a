//! Sensitive-data guard: decisions, redaction at any depth, fields as words, limits, config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_core::{CallContext, DecisionKind, GuardRegistry, Outcome};
use halt_engine::Engine;
use halt_guards_sensitive::factory;
use serde_json::{Value, json};

fn engine(config: Value) -> Engine {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    Engine::builder()
        .guard_arc(registry.build_json("sensitive_data", "sensitive_data", config).unwrap())
        .build()
        .unwrap()
}

fn run(e: &Engine, name: &str, args: Value) -> Outcome {
    e.evaluate_blocking(CallContext::new(name).with_arguments(args).unwrap())
}

#[test]
fn defaults_deny_secrets_and_pii_and_allow_clean_calls() {
    let e = engine(json!({}));
    assert_eq!(run(&e, "process", json!({"query": "Hello world", "count": 5})).decision(), DecisionKind::Allow);
    for args in [
        json!({"data": "My SSN is 123-45-6789"}),
        json!({"payment": "4111-1111-1111-1111"}),
        json!({"config": "sk_live_abcdefghijklmnop1234"}),
        json!({"password": "my_password_123"}),
        json!({"user": {"name": "John", "ssn": "123-45-6789"}}),
        json!({"items": ["normal text", "SSN: 123-45-6789", "more"]}),
        json!({"auth": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"}),
        json!({"k": "AKIAZ7Q3KJ2LMN4PRS5T"}),
    ] {
        assert_eq!(run(&e, "process", args.clone()).decision(), DecisionKind::Deny, "{args}");
    }
}

#[test]
fn findings_never_carry_the_value() {
    let e = engine(json!({}));
    let o = run(&e, "process", json!({"note": "card 4111 1111 1111 1111", "password": "hunter2hunter2"}));
    let d = o.final_decision().unwrap();
    assert_eq!(d.reason(), "Sensitive data detected: credit_card (1), field:password (1)");
    let details = d.details().to_string();
    assert!(!details.contains("4111 1111 1111 1111") && !details.contains("hunter2hunter2"), "{details}");
    assert_eq!(d.details()["findings"][0]["path"], "$.note");
    assert_eq!(d.details()["findings"][0]["preview"], "#### #### #### ####");
}

#[test]
fn reasons_count_findings_by_pattern_and_details_list_each() {
    let args = json!({"a": "SSN 123-45-6789", "b": ["123-45-6789", "card 4111 1111 1111 1111"]});
    let call = |meta: Value| CallContext::new("f").with_arguments(args.clone()).unwrap().with_metadata(meta).unwrap();
    let o = engine(json!({})).evaluate_blocking(call(json!({"note": "SSN 123-45-6789"})));
    let d = o.final_decision().unwrap();
    assert_eq!(d.reason(), "Sensitive data detected: credit_card (1), ssn (3) (metadata cannot be redacted)");
    assert_eq!(d.details()["findings"].as_array().unwrap().len(), 3);
    assert_eq!(
        d.details()["metadata_findings"],
        json!([{"pattern": "ssn", "path": "$.note", "preview": "###-##-####"}])
    );
    let o = engine(json!({"redact_on_modify": true})).evaluate_blocking(call(json!({})));
    let d = o.final_decision().unwrap();
    assert_eq!(d.reason(), "Sensitive data redacted: credit_card (1), ssn (2)");
    assert_eq!(d.details()["findings"][1], json!({"pattern": "ssn", "path": "$.b[0]", "preview": "###-##-####"}));
    assert_eq!(d.details()["metadata_findings"], json!([]));
}

#[test]
fn numbers_are_scanned_as_their_text() {
    let e = engine(json!({"redact_on_modify": true}));
    let o = run(&e, "pay", json!({"card": 4_111_111_111_111_111u64, "amount": 12}));
    assert_eq!(o.decision(), DecisionKind::Modify);
    assert_eq!(json!(o.modified_arguments().unwrap()), json!({"card": "[REDACTED:credit_card]", "amount": 12}));
}

#[test]
fn redaction_keeps_surrounding_text_at_any_depth() {
    let e = engine(
        json!({"redact_on_modify": true, "blocked_patterns": ["ssn", "email"], "sensitive_fields": ["api_key"]}),
    );
    let o = run(
        &e,
        "send",
        json!({
            "body": "Hi, SSN 123-45-6789; mail bob@corp.example now.",
            "thread": [{"quote": "old: 078-05-1120"}, "fine"],
            "headers": {"X-Api-Key": "abc123", "max_tokens": "512"},
        }),
    );
    assert_eq!(o.decision(), DecisionKind::Modify);
    let args = json!(o.modified_arguments().unwrap());
    assert_eq!(args["body"], "Hi, SSN [REDACTED:ssn]; mail [REDACTED:email] now.");
    assert_eq!(args["thread"], json!([{"quote": "old: [REDACTED:ssn]"}, "fine"]));
    assert_eq!(args["headers"], json!({"X-Api-Key": "[REDACTED:api_key]", "max_tokens": "512"}));
}

#[test]
fn metadata_is_scanned_but_never_rewritten() {
    let e = engine(json!({"redact_on_modify": true}));
    let ctx = CallContext::new("f").with_metadata(json!({"note": "ssn 123-45-6789"})).unwrap();
    let o = e.evaluate_blocking(ctx);
    assert_eq!(o.decision(), DecisionKind::Deny);
    assert!(o.denial_reasons()[0].contains("metadata cannot be redacted"));
}

#[test]
fn field_names_match_as_whole_words_anywhere_in_the_key() {
    let e = engine(json!({"blocked_patterns": [], "sensitive_fields": ["api_key", "token", "password"]}));
    for key in [
        "api_key",
        "apiKey",
        "X-Api-Key",
        "access_token",
        "userPassword",
        "TOKEN",
        "api_key_value",
        "tokenValue",
        "db_password_hash",
        "AWSApiKey",
    ] {
        assert_eq!(run(&e, "f", json!({ key: "v4lue" })).decision(), DecisionKind::Deny, "{key}");
    }
    for key in
        ["max_tokens", "token_count", "keyboard", "api_keys_count", "passwordless", "password_policy", "api_key_id"]
    {
        assert_eq!(run(&e, "f", json!({ key: "v4lue" })).decision(), DecisionKind::Allow, "{key}");
    }
    // Text, a number, a list or an object under a sensitive field is a secret; nothing is not.
    for value in [json!(""), json!(null), json!(true), json!([]), json!({})] {
        assert_eq!(run(&e, "f", json!({ "token": value })).decision(), DecisionKind::Allow, "{value}");
    }
    for value in [json!(512), json!(["hunter2"]), json!({"current": "hunter2"}), json!([[12345678]])] {
        assert_eq!(run(&e, "f", json!({ "password": value })).decision(), DecisionKind::Deny, "{value}");
    }
}

#[test]
fn too_deep_or_too_large_is_denied_not_skipped() {
    let e = engine(json!({"scan_depth": 3, "max_scan_bytes": 100}));
    assert_eq!(run(&e, "f", json!({"a": {"b": {"c": "ok"}}})).decision(), DecisionKind::Allow);
    let o = run(&e, "f", json!({"a": {"b": {"c": {"d": "hidden"}}}}));
    assert_eq!(o.decision(), DecisionKind::Deny);
    assert!(o.denial_reasons()[0].contains("too deep to scan"), "{:?}", o.denial_reasons());
    let o = run(&e, "f", json!({"a": [[["x", ["hidden"]]]]}));
    assert!(o.denial_reasons()[0].contains("too deep to scan"));
    let o = run(&e, "f", json!({"text": "x".repeat(101)}));
    assert!(o.denial_reasons()[0].contains("too large to scan"), "{:?}", o.denial_reasons());
    // Keys count too, texts or not, and numbers as their text.
    let o = run(&e, "f", json!({"k".repeat(60): null, "j".repeat(60): true}));
    assert!(o.denial_reasons()[0].contains("too large to scan"), "{:?}", o.denial_reasons());
    let o = run(
        &e,
        "f",
        json!({"n": [1_000_000_000_000u64, 2_000_000_000_000u64, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55]}),
    );
    assert!(o.denial_reasons()[0].contains("too large to scan"), "{:?}", o.denial_reasons());
    assert_eq!(run(&e, "f", json!({"k".repeat(45): "v".repeat(45)})).decision(), DecisionKind::Allow);
}

#[test]
fn custom_patterns_and_exempt_functions() {
    let e = engine(
        json!({"custom_patterns": {"employee_id": "EMP-[0-9]{6}"}, "allow_functions": ["internal_*"], "redact_on_modify": true}),
    );
    let o = run(&e, "lookup", json!({"who": "EMP-123456 asked"}));
    assert_eq!(json!(o.modified_arguments().unwrap())["who"], "[REDACTED:employee_id] asked");
    let o = run(&e, "INTERNAL_audit", json!({"ssn": "123-45-6789"}));
    assert!(o.decisions().is_empty(), "exempt functions skip the guard");
}

#[test]
fn hard_negatives_pass() {
    let e = engine(
        json!({"blocked_patterns": ["ssn", "credit_card", "api_key", "aws_key", "jwt", "iban", "ip_address"], "sensitive_fields": []}),
    );
    for text in [
        "Card 4111 1111 1111 1112 was declined",
        "Order 1234567812345670 shipped",
        "550e8400-e29b-41d4-a716-446655440000",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "ISBN 978-3-16-148410-0",
        "000-12-3456 and 666-45-6789 and 123-00-6789",
        "api_key=YOUR_API_KEY, sk-..., xxxxxxxxxxxx",
        "the token economy is booming",
        "build 3b18e512dba79e4c8300dd08aeb37f8e728b8dad",
        "version 1.2.3 and v1.2.3.4",
        "paste the key that starts with -----BEGIN OPENSSH PRIVATE KEY----- here",
        "-----BEGIN PGP PRIVATE KEY BLOCK----- is the header gpg prints",
    ] {
        let o = run(&e, "f", json!({ "text": text }));
        assert_eq!(o.decision(), DecisionKind::Allow, "{text}: {:?}", o.denial_reasons());
    }
}

#[test]
fn configuration_errors() {
    let mut registry = GuardRegistry::new();
    registry.register(factory()).unwrap();
    let err = |v: Value| registry.build_json("sensitive_data", "s", v).unwrap_err().to_string();
    assert!(err(json!({"blocked_patterns": ["ssm"]})).starts_with("invalid `blocked_patterns`: unknown pattern `ssm`"));
    assert!(err(json!({"custom_patterns": {"x": "(unclosed"}})).starts_with("invalid `custom_patterns.x`"));
    assert!(err(json!({"custom_patterns": {"ssn": "x"}})).contains("is the name of a built-in pattern"));
    assert!(err(json!({"allow_functions": ["[x"]})).starts_with("invalid `allow_functions`"));
    assert!(err(json!({"scan_depht": 3})).contains("unknown field `scan_depht`"));
    assert!(err(json!({"sensitive_fields": [" "]})).contains("sensitive_fields"));
}

#[test]
fn a_finding_is_placed_in_its_own_text_among_many() {
    // The scan joins all texts for one pre-pass; findings must still land on the right texts,
    // with nothing missed after a sensitive field or a text matching another pattern.
    let e = engine(json!({"sensitive_fields": ["password"], "blocked_patterns": ["email", "ssn", "credit_card"]}));
    let args = json!({
        "a": "contact ops@example.org",
        "a2": {"clean": ["p", "q", 5, {"deep": ["r", 6]}], "also": {"z": "w"}},
        "b": {"password": "hunter2hunter2", "n": 7, "list": ["x", 4_111_111_111_111_111u64, "y"], "m": [[1], {}]},
        "b2": [["s", "t"], {"u": 8}],
        "c": ["plain", "plain", "SSN 123-45-6789"],
    });
    let o = run(&e, "process", args);
    let paths: Vec<String> = o.final_decision().unwrap().details()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["pattern"].as_str().unwrap(), f["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        ["email $.a", "credit_card $.b.list[1]", "field:password $.b.password", "ssn $.c[2]"],
        "{paths:?}"
    );
    // Patterns that run to the end of a text find it among others too.
    let e2 = engine(json!({"blocked_patterns": ["private_key", "google_api_key"]}));
    let key = format!("AIza{}", "b".repeat(35));
    let cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC";
    let o = run(&e2, "process", json!({"a": cut, "b": "plain", "c": key}));
    let found: Vec<&str> = o.final_decision().unwrap().details()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["$.a", "$.c"]);
    // Digits split across two texts are no card, although the joined text holds one.
    let o = run(&e, "process", json!({"a": "4111 1111", "b": "1111 1111"}));
    assert_eq!(o.decision(), DecisionKind::Allow, "{:?}", o.final_decision());
}

#[test]
fn anchored_custom_patterns_match_every_text() {
    let e = engine(json!({"custom_patterns": {"ticket": "^TKT-[0-9]{6}$"}, "blocked_patterns": ["ticket"]}));
    for args in
        [json!({"a": "TKT-123456"}), json!({"a": "first", "b": "TKT-123456"}), json!({"z": ["x", "TKT-123456"]})]
    {
        assert_eq!(run(&e, "process", args.clone()).decision(), DecisionKind::Deny, "{args}");
    }
    assert_eq!(run(&e, "process", json!({"a": "see TKT-123456"})).decision(), DecisionKind::Allow);
}

#[test]
fn field_names_match_without_regard_to_case_beyond_ascii() {
    let e = engine(json!({"sensitive_fields": ["contraseña"]}));
    for key in ["contraseña", "CONTRASEÑA", "userContraseña", "user_CONTRASEÑA"] {
        let o = run(&e, "login", json!({key: "abc123"}));
        assert_eq!(o.decision(), DecisionKind::Deny, "{key}");
    }
    assert_eq!(run(&e, "login", json!({"contraseñas_count": "3"})).decision(), DecisionKind::Allow);
}

/// The evasions found by attacking the guard: each family must be caught.
#[test]
fn evasions_of_boundaries_characters_keys_and_types_are_caught() {
    let e = engine(json!({"blocked_patterns": ["ssn", "credit_card", "api_key"]}));
    let denied = |args: Value| {
        let o = run(&e, "f", args.clone());
        assert_eq!(o.decision(), DecisionKind::Deny, "{args}: {:?}", o.decisions());
    };
    // Word boundaries broken by `_` or letters.
    denied(json!({"a": "ssn_123-45-6789"}));
    denied(json!({"a": "id_4111111111111111_x"}));
    denied(json!({"a": "card4111111111111111"}));
    // Full-width digits, invisible characters inside a number, other dashes and dots.
    denied(json!({"a": "４１１１１１１１１１１１１１１１"}));
    denied(json!({"a": "4111\u{200b}1111\u{200b}1111\u{200b}1111"}));
    denied(json!({"a": "4111.1111.1111.1111"}));
    denied(json!({"a": "123\u{2011}45\u{2011}6789"}));
    denied(json!({"a": "١٢٣-٤٥-٦٧٨٩"}));
    denied(json!({"a": "123\u{00ad}-45-6789"}));
    // Secrets used as keys.
    denied(json!({"123-45-6789": "x"}));
    denied(json!({"nested": {"sk_live_4eC39HqLyjWDarjtT1zdp7dc": true}}));
    // Sensitive fields of any type, and field names as words anywhere in the key.
    denied(json!({"password": ["hunter2"]}));
    denied(json!({"password": 12345678}));
    denied(json!({"secret_key": "x1"}));
    denied(json!({"aws_secret_access_key": "x1"}));
    denied(json!({"AWSSecretKey": "x1"}));
    // A longer run of digits is another number; a version is not an address.
    let o = run(&e, "f", json!({"a": "order 41111111111111111111", "b": "1123-45-67890"}));
    assert_eq!(o.decision(), DecisionKind::Allow, "{:?}", o.decisions());
}

#[test]
fn redaction_reaches_keys_values_of_any_type_and_folded_numbers() {
    let e = engine(json!({"redact_on_modify": true, "blocked_patterns": ["ssn", "credit_card", "api_key"]}));
    let o = run(
        &e,
        "f",
        json!({
            "123-45-6789": "owner",
            "note": "card ４１１１ １１１１ １１１１ １１１１ ok",
            "password": ["hunter2", {"old": 1234}],
            "id": "ssn_123-45-6789",
        }),
    );
    assert_eq!(o.decision(), DecisionKind::Modify, "{:?}", o.decisions());
    let args = Value::Object(o.modified_arguments().unwrap().clone());
    let text = args.to_string();
    for secret in ["123-45-6789", "４１１１", "hunter2", "1234"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(args["[REDACTED:ssn]"], "owner");
    assert_eq!(args["note"], "card [REDACTED:credit_card] ok");
    assert_eq!(args["password"], json!(["[REDACTED:password]", {"old": "[REDACTED:password]"}]));
    assert_eq!(args["id"], "ssn_[REDACTED:ssn]");
    // Paths in the details show a secret key redacted too.
    let details = o.final_decision().unwrap().details().to_string();
    assert!(!details.contains("123-45-6789") && details.contains("$.[REDACTED:ssn]"), "{details}");
}

#[test]
fn slack_webhooks_and_app_tokens_pgp_key_blocks_and_the_aws_example_key_are_found_and_redacted() {
    let e =
        engine(json!({"blocked_patterns": ["api_key", "aws_key"], "sensitive_fields": [], "redact_on_modify": true}));
    let webhook = "https://hooks.slack.com/services/T024BE7LD/B01ABCDEF23/kQ4xZ8pV2mN7rT1yW6sD3fGh";
    let app = "xapp-1-A02B3C4D5E6-4567890123456-0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF6Z3bMBCADKv8Xcw0LGw+o0nNBxAq5fYu7JX2G8p1fQb7e2Ck3d9P4kHq2W\n=ab12\n-----END PGP PRIVATE KEY BLOCK-----";
    let cases = [
        (json!({"config": {"alerts": {"url": webhook}}}), "slack_token", webhook),
        (json!({"env": [format!("SLACK_APP_TOKEN={app}")]}), "slack_token", app),
        (json!({"files": [{"name": "secret.asc", "content": pgp}]}), "private_key", "lQOYBF6Z3bMBCADKv8Xcw0LGw"),
        (json!({"note": "use AKIAIOSFODNN7EXAMPLE in tests"}), "aws_key", "AKIAIOSFODNN7EXAMPLE"),
    ];
    for (args, pattern, secret) in cases {
        let o = run(&e, "deploy", args.clone());
        assert_eq!(o.decision(), DecisionKind::Modify, "{args}");
        let found: Vec<&str> = o.final_decision().unwrap().details()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["pattern"].as_str().unwrap())
            .collect();
        assert!(found.contains(&pattern), "{pattern} in {found:?}");
        let redacted = serde_json::to_string(o.modified_arguments().unwrap()).unwrap();
        assert!(!redacted.contains(secret), "{redacted}");
        assert!(redacted.contains(&format!("[REDACTED:{pattern}]")), "{redacted}");
    }
    // Slack's own documentation links and a webhook URL with its secret cut off are not tokens.
    for text in
        ["see https://api.slack.com/messaging/webhooks", "https://hooks.slack.com/services/T024BE7LD/B01ABCDEF23/"]
    {
        assert_eq!(run(&e, "deploy", json!({ "text": text })).decision(), DecisionKind::Allow, "{text}");
    }
}

#[test]
fn phones_in_e164_form_count_and_service_codes_do_not() {
    let e = engine(json!({"blocked_patterns": ["phone_us"], "sensitive_fields": [], "redact_on_modify": true}));
    let o = run(&e, "notify", json!({"contacts": [{"mobile": "+14155552671"}]}));
    assert_eq!(o.decision(), DecisionKind::Modify);
    let redacted = serde_json::to_string(o.modified_arguments().unwrap()).unwrap();
    assert!(!redacted.contains("4155552671") && redacted.contains("[REDACTED:phone_us]"), "{redacted}");
    for text in ["call 911-555-0123", "(411) 555-0199", "+1415555267100", "+10155552671"] {
        assert_eq!(run(&e, "notify", json!({ "text": text })).decision(), DecisionKind::Allow, "{text}");
    }
}

#[test]
fn the_new_families_are_redacted_at_any_depth() {
    let patterns = ["ssn", "phone_us", "ip_address", "iban", "generic_secret", "slack_token", "private_key", "aws_key"];
    let e = engine(json!({"redact_on_modify": true, "blocked_patterns": patterns, "sensitive_fields": []}));
    let basic = format!("Basic {}", "YWxpY2U6czNjcjN0UGFzcw==");
    let o = run(
        &e,
        "crm_update",
        json!({
            "customer": {"ssn": "123456789", "mobile": 4155552671u64, "note": "SSN: 219099999 verified"},
            "net": {"peer": "2001:db8:85a3::8a2e:370:7334", "version": "1.2.3.4", "oid": "1.3.6.1.4.1.2021"},
            "pay": "to gb82 west 1234 5698 7654 32 today",
            "env": "DB_PASSWORD=Xk9#mP2$vL7qR4wZ\nDEBUG=true",
            "headers": {"Authorization": basic},
            "dsn": "postgres://app:S3cure!Pass@db.internal:5432/orders",
            "hook": "https://hooks.slack.com/services/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",
            "keys": ["AKIAIOSFODNN7EXAMPLE"],
        }),
    );
    assert_eq!(o.decision(), DecisionKind::Modify, "{:?}", o.decisions());
    let a = json!(o.modified_arguments().unwrap());
    assert_eq!(a["customer"]["ssn"], "[REDACTED:ssn]");
    assert_eq!(a["customer"]["mobile"], "[REDACTED:phone_us]");
    assert_eq!(a["customer"]["note"], "[REDACTED:ssn] verified", "the label goes with the number");
    assert_eq!(a["net"]["peer"], "[REDACTED:ip_address]");
    assert_eq!(a["net"]["version"], "1.2.3.4", "a version under `version` is no address");
    assert_eq!(a["net"]["oid"], "1.3.6.1.4.1.2021", "an OID is no address");
    assert_eq!(a["pay"], "to [REDACTED:iban] today");
    assert_eq!(a["env"], "[REDACTED:generic_secret]\nDEBUG=true");
    assert_eq!(a["headers"]["Authorization"], "[REDACTED:generic_secret]");
    assert_eq!(a["dsn"], "postgres://app[REDACTED:generic_secret]@db.internal:5432/orders");
    assert_eq!(a["hook"], "https://[REDACTED:slack_token]");
    assert_eq!(a["keys"][0], "[REDACTED:aws_key]");
    // Nothing of a value is left in the reasons or the details.
    let shown = format!("{:?}", o.decisions());
    for value in ["123456789", "4155552671", "Xk9#mP2", "S3cure", "x9Kl2mN8"] {
        assert!(!shown.contains(value), "{value} in {shown}");
    }
}

#[test]
fn a_key_alone_never_makes_a_finding() {
    let e = engine(json!({"blocked_patterns": ["ssn", "phone_us", "generic_secret"], "sensitive_fields": []}));
    for args in [
        json!({"ssn": "12345"}),
        json!({"ssn": "987654321"}),
        json!({"phone": "1234567890"}),
        json!({"mobile": "9115551234"}),
        json!({"client_secret": "short"}),
        json!({"token": "${TOKEN}"}),
        json!({"api_key": "/run/secrets/api_key"}),
        json!({"max_tokens": 123456789}),
        json!({"page_token": "CiAKGjBpNDd2Nmp2Zml2cXRtcGF6"}),
        json!({"order_id": "123456789"}),
    ] {
        assert_eq!(run(&e, "f", args.clone()).decision(), DecisionKind::Allow, "{args}");
    }
}
