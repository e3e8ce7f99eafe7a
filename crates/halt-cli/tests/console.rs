//! `agenthalt eval --approvals console`, driven through a real pseudo-terminal (`script` makes
//! one and runs the binary on it): a person approves, denies, or does not answer in time; with no
//! terminal at all, the run stops and says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bin, temp_file};
use serde_json::Value;

const POLICY: &str = "
guards:
  purchase:
    require_approval_above: 10
approvals:
  timeout_seconds: TIMEOUT
";

/// The binary under `script`, on a pty of its own; what the terminal shows is collected.
struct OnTerminal {
    child: Child,
    screen: Arc<Mutex<String>>,
}

impl OnTerminal {
    fn start(name: &str, timeout_seconds: u32) -> Self {
        let script = Command::new("script").arg("--version").output();
        assert!(script.is_ok(), "`script` (util-linux) is needed to drive a pseudo-terminal");
        let policy = temp_file(&format!("{name}.yaml"), &POLICY.replace("TIMEOUT", &timeout_seconds.to_string()));
        let input = temp_file(
            &format!("{name}.jsonl"),
            "{\"call_id\": \"c1\", \"function_name\": \"buy_item\", \"arguments\": {\"amount\": 50, \"item\": \"desk\"}}\n",
        );
        let program = bin().get_program().to_str().unwrap().to_owned();
        let command = format!(
            "{program} eval --config {} --input {} --approvals console",
            policy.to_str().unwrap(),
            input.to_str().unwrap()
        );
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let seen = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, screen }
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.screen.lock().unwrap().contains(text) {
            assert!(Instant::now() < deadline, "the terminal never showed {text:?}: {}", self.screen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the run to end; returns the screen and the outcome line.
    fn finish(mut self) -> (String, Value) {
        self.wait_for("\"call_id\":\"c1\"");
        self.wait_for("}]}");
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let screen = self.screen.lock().unwrap().clone();
        let line = screen.lines().find(|l| l.contains("\"call_id\":\"c1\"")).unwrap();
        let json = &line[line.find('{').unwrap()..];
        (screen.clone(), serde_json::from_str(json.trim()).unwrap())
    }
}

#[test]
fn a_person_approves_at_the_terminal() {
    let mut t = OnTerminal::start("console-approve", 30);
    t.wait_for("Approve? [y/N]");
    t.type_line("y");
    let (screen, outcome) = t.finish();
    assert!(screen.contains("function:  buy_item"), "{screen}");
    assert!(screen.contains("reason:    Purchase amount is above the approval threshold of 10"), "{screen}");
    assert!(screen.contains("\"item\": \"desk\""), "{screen}");
    assert_eq!(outcome["executed"], true, "{outcome}");
}

#[test]
fn a_person_denies_at_the_terminal() {
    let mut t = OnTerminal::start("console-deny", 30);
    t.wait_for("Approve? [y/N]");
    t.type_line("n");
    let (_, outcome) = t.finish();
    assert_eq!(outcome["executed"], false, "{outcome}");
    assert_eq!(outcome["decision"], "require_approval");
}

#[test]
fn no_answer_in_time_is_a_refusal() {
    let t = OnTerminal::start("console-timeout", 1);
    t.wait_for("Approve? [y/N] (refused in 1 s)");
    let (screen, outcome) = t.finish();
    assert!(screen.contains("(no answer: refused)"), "{screen}");
    assert_eq!(outcome["executed"], false, "{outcome}");
}

#[test]
fn with_no_terminal_the_run_stops_and_says_why() {
    let policy = temp_file("console-none.yaml", &POLICY.replace("TIMEOUT", "5"));
    // `setsid` leaves the binary without a controlling terminal, as under a service manager.
    let out = Command::new("setsid")
        .arg(bin().get_program())
        .args(["eval", "--config", policy.to_str().unwrap(), "--approvals", "console"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--approvals console needs a terminal: no terminal to ask on"), "{err}");
    assert!(out.stdout.is_empty());
}
