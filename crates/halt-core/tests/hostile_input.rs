//! Hostile input, generated: call parsing, `Money` parsing and name normalisation against
//! independent oracles (serde_json's own values, Rust's float parser, the plain name). These
//! stand in for fuzz targets: bounded, deterministic per seed, and run on every `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_core::names::{normalize, resolve_resource, validate};
use halt_core::{CallContext, Money, MoneyError};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value, a few levels deep, with keys and strings that need escaping now and then.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z\"\\\\\u{0}-\u{1f}é\u{2028}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_\"é]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A call object: the usual fields, each sometimes of the wrong type, plus unknown ones.
fn call_object() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("f")), Just(json!(" Send_Email ")), json_value()],
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![Just(json!("agent")), json_value()]),
        prop::option::of(prop_oneof![Just(json!(12.5)), Just(json!(-1)), json_value()]),
        prop::option::of(json_value()),
    )
        .prop_map(|(name, args, agent, time, extra)| {
            let mut o = serde_json::Map::new();
            o.insert("function_name".into(), name);
            o.insert("call_id".into(), json!("c"));
            if let Some(a) = args {
                o.insert("arguments".into(), a);
            }
            if let Some(a) = agent {
                o.insert("agent_id".into(), a);
            }
            if let Some(t) = time {
                o.insert("timestamp".into(), t);
            }
            if let Some(x) = extra {
                o.insert("ui".into(), x);
            }
            Value::Object(o)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// The text of a call reads as serde_json's value of the same text reads: the same call
    /// or the same error.
    #[test]
    fn call_text_reads_as_its_value(call in call_object()) {
        let text = serde_json::to_string(&call).unwrap();
        let from_text = CallContext::from_json_str(&text).map_err(|e| e.to_string());
        let from_value = CallContext::from_json(serde_json::from_str(&text).unwrap()).map_err(|e| e.to_string());
        prop_assert_eq!(from_text, from_value);
    }

    /// An object that repeats a key, anywhere in a call, is refused.
    #[test]
    fn a_repeated_key_is_always_refused(call in call_object(), key in "[a-z]{1,4}", a in json_value(), b in json_value()) {
        let mut args = serde_json::to_string(&json!({"x": [1]})).unwrap();
        args.pop();
        let inner = format!("{args},{k}:{a},{k}:{b}}}", k = Value::String(key), a = a, b = b);
        let text = serde_json::to_string(&call).unwrap().replacen('{', &format!("{{\"arguments\":{inner},"), 1);
        let e = CallContext::from_json_str(&text).unwrap_err().to_string();
        prop_assert!(e.contains("repeats a key"), "{}: {}", text, e);
    }

    /// Mangled text never panics or hangs: it is a call or an error.
    #[test]
    fn mangled_call_text_is_answered(call in call_object(), cut in 0usize..400, byte in any::<u8>()) {
        let mut text = serde_json::to_vec(&call).unwrap();
        let at = cut.min(text.len());
        text.insert(at, byte);
        text.truncate((at + cut).min(text.len()));
        let _ = CallContext::from_json_str(&String::from_utf8_lossy(&text));
    }

    /// Only what a float parser reads as a number is a number; the rest is "not a number".
    #[test]
    fn money_accepts_exactly_the_decimal_grammar(s in "[-+]?[0-9.eE+-]{0,10}|[0-9]{1,4}\\.[0-9]{0,8}([eE][-+]?[0-9]{1,3})?|(nan|inf|Infinity)") {
        let float = s.parse::<f64>();
        match s.parse::<Money>() {
            Err(MoneyError::NotANumber(_)) => prop_assert!(float.is_err(), "{:?} refused but floats read it", s),
            Err(MoneyError::NotFinite(_)) => prop_assert!(float.is_ok_and(|f| !f.is_finite())),
            Err(MoneyError::Negative(_)) => prop_assert!(float.is_ok_and(|f| f < 0.0)),
            Err(MoneyError::Overflow(_)) => prop_assert!(float.is_ok_and(|f| f.abs() > 9.2e12)),
            Err(e) => prop_assert!(false, "{:?}: {}", s, e),
            Ok(m) => {
                let f = float.unwrap();
                prop_assert!((m.as_f64() - f).abs() <= 1e-6 * f.abs().max(1.0), "{:?}: {} vs {}", s, m, f);
            }
        }
    }

    /// However a name is disguised (case, padding, width, invisible characters), it is the
    /// plain name once normalised.
    #[test]
    fn disguised_names_normalise_to_the_plain_name(name in "[a-z][a-z0-9_]{0,15}", how in 0u8..16) {
        let mut disguised: String = name
            .chars()
            .map(|c| if how & 1 != 0 && c.is_ascii_alphanumeric() { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c })
            .collect();
        if how & 2 != 0 {
            disguised = disguised.to_uppercase();
        }
        if how & 4 != 0 {
            disguised = disguised.chars().flat_map(|c| [c, '\u{200b}']).collect();
        }
        if how & 8 != 0 {
            disguised = format!(" \u{3000}{disguised}\u{00a0} ");
        }
        prop_assert_eq!(normalize(&disguised), name.as_str());
        prop_assert_eq!(validate(&disguised).unwrap(), name.as_str());
    }

    /// Any text: validating or resolving it never panics, and a resolved path never climbs.
    #[test]
    fn resolved_resources_never_climb(s in "\\PC{0,30}|[a./\\\\%]{0,20}") {
        let _ = validate(&s);
        if let Ok(r) = resolve_resource(&s) {
            prop_assert!(!r.split('/').any(|p| p == ".." || p == "."), "{:?} -> {:?}", s, r);
            prop_assert!(r.is_empty() || !r.contains("//"));
        }
    }
}
