//! What the binary's tests share: running it on a policy and some input.

#![allow(dead_code, reason = "each test file uses a part")]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The binary under test: this build's, or the one `AGENTHALT_BIN` names (to run these tests
/// against another build, such as an older release that had a bug).
pub(crate) fn bin() -> Command {
    Command::new(std::env::var_os("AGENTHALT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_agenthalt").into()))
}

pub(crate) fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agenthalt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

pub(crate) fn eval(policy: &str, input: &str, extra: &[&str]) -> (Output, Vec<Value>) {
    // Tests run in parallel: every policy gets a file of its own.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let config = temp_file(&format!("policy-{}.yaml", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)), policy);
    let mut child = bin()
        .args(["eval", "--config", config.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading (an invalid policy): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    let lines =
        String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out, lines)
}
