//! The fast scan of an object (one joined pass, then only what a match touched) finds exactly
//! what the plain walk of every text finds, for any object.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code fails loudly")]

use halt_guards_sensitive::{Redactor, RedactorConfig, detector_names};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Texts that hold, nearly hold or run into sensitive data, and plain ones.
const PIECES: &[&str] = &[
    "plain words",
    "",
    "ab",
    "ops@example.org",
    "SSN 123-45-6789",
    "4111 1111 1111 1111",
    "4111 1111",
    "1111 1111",
    "AKIAZ7Q3KJ2LMN4PRS5T",
    "sk_live_abcdefghijklmnop1234",
    "password: hunter2hunter2",
    "-----BEGIN PRIVATE KEY-----\nMIIEvQ",
    "192.168.1.20",
    "(555) 234-5678",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIzNDU2",
    "token economy",
    // As short as a match of their pattern can be.
    "4222222222222",
    "a@b.co",
    "1.1.1.1",
    // Plain texts, which no built-in pattern matches alone, but which may complete a match.
    "unit_price",
    "abcdefghijklmnopqrstuvw",
    "12.49",
];

const KEYS: &[&str] = &["a", "note", "password", "userToken", "max_tokens", "api_key", "list", "x", "unit_price"];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..PIECES.len(), 0..PIECES.len()).prop_map(|(i, j)| json!(format!("{}{}", PIECES[i], PIECES[j]))),
        (0..PIECES.len()).prop_map(|i| json!(PIECES[i])),
        any::<u64>().prop_map(|n| json!(n)),
        Just(json!(4_111_111_111_111_111u64)),
        Just(json!(4_222_222_222_222u64)),
        Just(json!(12.49)),
        Just(Value::Null),
        Just(json!(true)),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((0..KEYS.len(), inner), 0..5).prop_map(|entries| {
                Value::Object(entries.into_iter().map(|(k, v)| (KEYS[k].to_owned(), v)).collect())
            }),
        ]
    })
}

fn redactor(patterns: &[&str], max_depth: usize, max_bytes: usize) -> Redactor {
    Redactor::new(&RedactorConfig {
        patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        sensitive_fields: vec!["password".into(), "token".into(), "api_key".into()],
        max_depth,
        max_bytes,
        ..Default::default()
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_fast_scan_finds_what_the_plain_walk_finds(
        entries in prop::collection::vec((0..KEYS.len(), tree()), 1..6),
        limits in prop_oneof![Just((5usize, 1usize << 20)), Just((2, 1 << 20)), Just((5, 120))],
        // Every detector; or only long ones, so that many texts are too short to hold a match
        // alone and the pre-pass leaves them out of its joined text.
        patterns in prop_oneof![Just(detector_names()), Just(vec!["credit_card", "aws_key", "jwt"])],
    ) {
        let object: Map<String, Value> = entries.into_iter().map(|(k, v)| (KEYS[k].to_owned(), v)).collect();
        let r = redactor(&patterns, limits.0, limits.1);
        let fast = r.scan_object(&object);
        let plain = r.scan(&Value::Object(object.clone()));
        prop_assert_eq!(fast, plain, "{}", Value::Object(object));
    }
}

#[test]
fn a_text_met_again_is_scanned_again() {
    let r = redactor(&detector_names(), 5, 1 << 20);
    let note = "please call (555) 234-5678 today";
    let object = json!({"a": [note, "plain words and more", note], "b": {"note": note}});
    let Value::Object(object) = object else { unreachable!() };
    let paths: Vec<String> = r.scan_object(&object).unwrap().into_iter().map(|f| f.path).collect();
    assert_eq!(paths, ["$.a[0]", "$.a[2]", "$.b.note"]);
}
