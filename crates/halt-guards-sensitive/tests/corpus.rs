//! The labelled corpus: precision and recall per detector and per family of cases, with every
//! detector on. A case is a text (`"text"`), or a call's arguments (`"arguments"`) where a key's
//! words give context; its `"family"` says what it exercises (`"base"` when it does not say).
//! Run with `--nocapture` to see the tables. Fails below 0.97 overall for either.

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "test code prints its measurement")]

use std::collections::{BTreeMap, BTreeSet};

use halt_guards_sensitive::{Redactor, RedactorConfig, detector_names};
use serde_json::{Value, json};

#[derive(Default)]
struct Score {
    tp: u32,
    fp: u32,
    fn_: u32,
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 { 1.0 } else { f64::from(a) / f64::from(b) }
}

/// Prints one line per entry: its counts, precision and recall.
fn table(title: &str, scores: &BTreeMap<String, Score>) {
    println!("{title:<24} {:>4} {:>4} {:>4} {:>9} {:>7}", "tp", "fp", "fn", "precision", "recall");
    for (name, s) in scores {
        let (precision, recall) = (ratio(s.tp, s.tp + s.fp), ratio(s.tp, s.tp + s.fn_));
        println!("{name:<24} {:>4} {:>4} {:>4} {precision:>9.3} {recall:>7.3}", s.tp, s.fp, s.fn_);
    }
}

#[test]
fn precision_and_recall_per_detector() {
    let all: Vec<String> = detector_names().into_iter().filter(|n| *n != "api_key").map(String::from).collect();
    let redactor = Redactor::new(&RedactorConfig {
        patterns: all.clone(),
        max_depth: 5,
        max_bytes: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let corpus = include_str!("corpus.jsonl");
    let mut scores: BTreeMap<String, Score> = all.iter().map(|n| (n.clone(), Score::default())).collect();
    let mut families: BTreeMap<String, Score> = BTreeMap::new();
    let mut mistakes = Vec::new();
    let mut cases = 0;
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        cases += 1;
        let case: Value = serde_json::from_str(line).unwrap();
        let arguments = match (&case["text"], &case["arguments"]) {
            (Value::String(text), Value::Null) => json!({ "text": text }),
            (Value::Null, args @ Value::Object(_)) => args.clone(),
            _ => panic!("a case has a text or arguments: {line}"),
        };
        let family = case["family"].as_str().unwrap_or("base").to_owned();
        let want: BTreeSet<String> =
            case["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect();
        let found = redactor.scan(&arguments).unwrap();
        let got: BTreeSet<String> = found.iter().map(|f| f.pattern.clone()).collect();
        for f in &found {
            // A shape, never a character of the value.
            assert!(
                !f.preview.is_empty() && f.preview.chars().all(|c| !c.is_ascii_alphanumeric() || c == 'x'),
                "{f:?}"
            );
        }
        let by_family = families.entry(family.clone()).or_default();
        for name in &all {
            let s = scores.get_mut(name).unwrap();
            match (want.contains(name), got.contains(name)) {
                (true, true) => {
                    s.tp += 1;
                    by_family.tp += 1;
                }
                (false, true) => {
                    s.fp += 1;
                    by_family.fp += 1;
                }
                (true, false) => {
                    s.fn_ += 1;
                    by_family.fn_ += 1;
                }
                (false, false) => {}
            }
        }
        // A case with no label that nothing flags counts as a true negative: keep the family.
        if want != got {
            mistakes.push(format!("[{family}] {arguments}: want {want:?}, got {got:?}"));
        }
    }
    assert!(cases >= 200, "the corpus holds {cases} cases");
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    table("detector", &scores);
    for (name, s) in &scores {
        assert!(s.tp > 0, "{name} has no positive case in the corpus");
        tp += s.tp;
        fp += s.fp;
        fn_ += s.fn_;
    }
    println!();
    table("family", &families);
    let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
    println!("overall: {cases} cases, precision {precision:.3}, recall {recall:.3}");
    for m in &mistakes {
        println!("  mistake: {m}");
    }
    assert!(precision >= 0.97 && recall >= 0.97, "precision {precision:.3}, recall {recall:.3}");
}
