//! The chain: every kind of tampering reported at its line, rotation that verifies across files,
//! a missing file, bad input, and a chain carried on after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use halt_audit::{AuditConfig, AuditLog, FileSink, Problem, Rotation, verify};
use halt_core::{CallContext, Decision};
use halt_engine::Engine;
use halt_testing::guards::StaticGuard;
use serde_json::json;

fn dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("halt-audit-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `calls` evaluations to an audit file at `path`.
fn write(path: &Path, calls: usize, rotation: Rotation) {
    let sink = FileSink::open(path, rotation).unwrap();
    let audit = AuditLog::new(vec![Box::new(sink)], AuditConfig::default()).unwrap();
    let engine = Engine::builder()
        .guard(StaticGuard::new("scope", Decision::deny("not allowed")).only_for("drop_table"))
        .recorder(Arc::new(audit.clone()))
        .build()
        .unwrap();
    for i in 0..calls {
        let f = if i % 3 == 0 { "drop_table" } else { "read_file" };
        let call = CallContext::new(f).with_arguments(json!({"n": i})).unwrap().with_call_id(format!("c{i}"));
        engine.evaluate_blocking(call);
    }
    assert!(audit.flush(Duration::from_secs(10)));
    audit.close();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn broken_at(paths: &[&Path]) -> (usize, Problem) {
    let e = verify(paths).unwrap_err();
    (e.line, e.problem)
}

#[test]
fn an_untouched_log_verifies() {
    let d = dir("ok");
    let p = d.join("audit.jsonl");
    write(&p, 10, Rotation::default());
    let v = verify(&[&p]).unwrap();
    assert_eq!(v.entries, 10);
    assert_eq!(v.files, 1);
    assert_eq!(v.head.len(), 64);
}

#[test]
fn each_kind_of_tampering_is_reported_at_its_line() {
    let d = dir("tamper");
    let p = d.join("audit.jsonl");
    write(&p, 8, Rotation::default());
    let original = lines(&p);

    let mut edited = original.clone();
    edited[3] = edited[3].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    assert_ne!(edited[3], original[3], "line 4 is a denial to edit");
    rewrite(&p, &edited);
    assert_eq!(broken_at(&[&p]), (4, Problem::Edited));

    let mut deleted = original.clone();
    deleted.remove(4);
    rewrite(&p, &deleted);
    assert_eq!(broken_at(&[&p]), (5, Problem::Dropped { missing: 1 }));

    let mut swapped = original.clone();
    swapped.swap(5, 6);
    rewrite(&p, &swapped);
    assert_eq!(broken_at(&[&p]), (6, Problem::Reordered));

    let mut text = original.iter().map(|l| format!("{l}\n")).collect::<String>();
    text.truncate(text.len() - 40);
    std::fs::write(&p, &text).unwrap();
    assert_eq!(broken_at(&[&p]), (8, Problem::Truncated));

    // The whole file cut to its first line: what is left is a valid chain of one; the head the
    // last verify printed is what shows the cut.
    rewrite(&p, &original[..1]);
    let v = verify(&[&p]).unwrap();
    assert_eq!(v.entries, 1);
    rewrite(&p, &original);
    assert_ne!(verify(&[&p]).unwrap().head, v.head);
}

#[test]
fn rotation_keeps_the_chain_across_files_and_a_missing_one_shows() {
    let d = dir("rotate");
    let p = d.join("audit.jsonl");
    write(&p, 40, Rotation { max_bytes: Some(2_000), daily: false });
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4, "rotated into several files: {files:?}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 2_000);
    }
    // In any order: the files are put in the chain's order.
    let mut shuffled = files.clone();
    shuffled.reverse();
    let v = verify(&shuffled).unwrap();
    assert_eq!((v.entries, v.files), (40, files.len()));

    // The active file is `audit.jsonl`, the rotated ones `audit.jsonl.<seq>`; drop a middle one.
    let rotated: Vec<&PathBuf> = files.iter().filter(|f| f.extension().is_some_and(|e| e != "jsonl")).collect();
    let missing = rotated[1];
    let rest: Vec<&PathBuf> = files.iter().filter(|f| *f != missing).collect();
    let e = verify(&rest).unwrap_err();
    assert!(matches!(e.problem, Problem::MissingFile { .. }), "{e}");
    assert_eq!(e.file, *rotated[2], "reported at the file after the missing one");

    // Without the first file, the chain does not start where it should.
    let later: Vec<&PathBuf> = files.iter().filter(|f| *f != rotated[0]).collect();
    assert!(matches!(verify(&later).unwrap_err().problem, Problem::NotTheStart { .. }));
}

#[test]
fn bad_input_gets_a_clear_message_never_a_panic() {
    let d = dir("bad");
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(verify(&[&empty]).unwrap_err().to_string(), format!("{}:0: the file is empty", empty.display()));

    let p = d.join("audit.jsonl");
    write(&p, 5, Rotation::default());
    let mut l = lines(&p);
    l[2] = "{\"hello\": \"world\"}".into();
    rewrite(&p, &l);
    assert_eq!(broken_at(&[&p]), (3, Problem::NotAnEntry));
    l[2] = "\u{0}\u{1}binary".into();
    rewrite(&p, &l);
    assert_eq!(broken_at(&[&p]), (3, Problem::NotAnEntry));

    let missing = d.join("nope.jsonl");
    assert!(matches!(verify(&[&missing]).unwrap_err().problem, Problem::Unreadable(_)));

    // A file from another chain after this one's.
    let a = d.join("a.jsonl");
    write(&a, 12, Rotation { max_bytes: Some(2_000), daily: false });
    let b = d.join("b.jsonl");
    write(&b, 12, Rotation { max_bytes: Some(2_000), daily: false });
    let first_of = |prefix: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .collect();
        v.sort();
        v
    };
    let (a_files, b_files) = (first_of("a.jsonl"), first_of("b.jsonl"));
    let a_first = a_files.iter().find(|f| f.extension().is_some_and(|e| e != "jsonl")).unwrap();
    let b_later = b_files.iter().filter(|f| f.extension().is_some_and(|e| e != "jsonl")).nth(1).unwrap();
    let e = verify(&[a_first, b_later]).unwrap_err();
    assert_eq!((e.file.as_path(), e.problem), (b_later.as_path(), Problem::OtherChain));
}

#[test]
fn a_restart_carries_the_chain_on_and_a_crash_cut_line_becomes_a_gap() {
    let d = dir("resume");
    let p = d.join("audit.jsonl");
    write(&p, 4, Rotation::default());
    write(&p, 3, Rotation::default());
    assert_eq!(verify(&[&p]).unwrap().entries, 7, "one chain across two runs");

    // A crash in the middle of a line: the next run cuts it off and records the loss.
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("{\"seq\":7,\"chain\":\"half a li");
    std::fs::write(&p, text).unwrap();
    write(&p, 2, Rotation::default());
    let e = verify(&[&p]).unwrap_err();
    assert_eq!((e.line, e.problem), (8, Problem::Gap { lost: 1 }));

    // A file whose last line is not an entry is not appended to.
    let q = d.join("foreign.jsonl");
    std::fs::write(&q, "some other log\n").unwrap();
    let sink = FileSink::open(&q, Rotation::default()).unwrap();
    assert!(AuditLog::new(vec![Box::new(sink)], AuditConfig::default()).is_err());
}
