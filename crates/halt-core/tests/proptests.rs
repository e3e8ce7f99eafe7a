//! Invariants: priority, normalisation, name validation, money.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use halt_core::decision::most_restrictive;
use halt_core::names::{NameError, NamePatterns, normalize, resolve_resource, validate};
use halt_core::{Decision, DecisionKind, JsonObject, Money};
use proptest::prelude::*;

fn decision(kind: u8) -> Decision {
    match kind % 4 {
        0 => Decision::allow("a"),
        1 => Decision::modify("m", JsonObject::new()),
        2 => Decision::require_approval("r"),
        _ => Decision::deny("d"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_final_decision_is_the_most_restrictive(kinds in prop::collection::vec(0u8..4, 0..12)) {
        let ds: Vec<Decision> = kinds.iter().map(|k| decision(*k)).collect();
        match most_restrictive(&ds) {
            None => prop_assert!(ds.is_empty()),
            Some(i) => {
                let max = ds.iter().map(Decision::kind).max().unwrap_or(DecisionKind::Allow);
                prop_assert_eq!(ds[i].kind(), max);
                // Ties go to the first.
                prop_assert!(ds[..i].iter().all(|d| d.kind() < max));
            }
        }
    }

    #[test]
    fn normalisation_is_idempotent(s in "\\PC{0,24}|[a-zA-Z_\u{200b}\u{ff21}-\u{ff5a} ]{0,24}") {
        let once = normalize(&s).into_owned();
        let twice = normalize(&once).into_owned();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn ascii_names_validate_as_the_general_rules_say(s in "[\\x00-\\x7f]{0,24}") {
        // The fast one-pass check for ASCII names must agree with the rules as written.
        let expected = if let Some(c) = s.chars().find(|c| c.is_control()) {
            Err(NameError::ControlCharacter(u32::from(c)))
        } else if normalize(&s).is_empty() {
            Err(NameError::Empty)
        } else {
            Ok(normalize(&s).into_owned())
        };
        prop_assert_eq!(validate(&s).map(|n| n.into_owned()), expected.clone());
        // A name without a separator is itself, but for `.` and `..`, which are paths alone.
        if !s.contains(['/', '\\']) && !matches!(normalize(&s).as_ref(), "." | "..") {
            prop_assert_eq!(resolve_resource(&s).map(|n| n.into_owned()), expected);
        }
    }

    #[test]
    fn a_name_matches_its_own_literal_pattern(s in "[a-zA-Z0-9_./-]{1,24}") {
        let p = NamePatterns::new([s.as_str()]).unwrap();
        prop_assert!(p.is_match(&s.to_uppercase()));
    }

    #[test]
    fn money_round_trips_through_text(micros in 0i64..=i64::MAX) {
        let m = Money::from_micros(micros);
        let back: Money = m.to_string().parse().unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn money_parsing_never_panics(s in "\\PC{0,40}") {
        let _ = s.parse::<Money>();
    }

    #[test]
    fn money_matches_float_parsing_to_six_decimals(units in 0u32..1_000_000, frac in 0u32..1_000_000) {
        let text = format!("{units}.{frac:06}");
        let m: Money = text.parse().unwrap();
        prop_assert_eq!(m.micros(), i64::from(units) * 1_000_000 + i64::from(frac));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// The float shortcut for JSON numbers agrees with the exact decimal parse.
    #[test]
    fn money_from_a_float_matches_its_decimal_text(f in 0.0f64..2e9) {
        let via_json = Money::from_json(&serde_json::json!(f));
        let via_text: Result<Money, _> = serde_json::Number::from_f64(f).unwrap().to_string().parse();
        prop_assert_eq!(via_json, via_text);
    }

    #[test]
    fn money_from_short_decimals_is_exact(units in 0u32..1_000_000_000, frac in 0u32..1_000_000) {
        let f: f64 = format!("{units}.{frac:06}").parse().unwrap();
        let m = Money::from_json(&serde_json::json!(f)).unwrap();
        prop_assert_eq!(m.micros(), i64::from(units) * 1_000_000 + i64::from(frac));
    }
}
