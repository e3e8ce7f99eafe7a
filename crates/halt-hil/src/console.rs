//! Asks the person at the terminal: the call (its arguments as redacted by the guards), why, the
//! risk, and a yes/no with a deadline. With no terminal, or no answer in time, the call is refused.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use halt_core::async_trait;
use halt_engine::{ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse};

/// The terminal every [`Console`] of the process shares: one reading thread, whose lines arrive
/// here; lines typed while nobody is asked are dropped before the next question.
struct Terminal {
    lines: Mutex<mpsc::Receiver<String>>,
    out: Mutex<File>,
}

/// The process's terminal, opened once; an error says why there is none.
fn terminal() -> Result<&'static Terminal, String> {
    static TERMINAL: OnceLock<Result<Terminal, String>> = OnceLock::new();
    TERMINAL
        .get_or_init(|| {
            let open = |write: bool| std::fs::OpenOptions::new().read(!write).write(write).open("/dev/tty");
            let input = open(false).map_err(|e| format!("no terminal to ask on ({e})"))?;
            let out = open(true).map_err(|e| format!("no terminal to ask on ({e})"))?;
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("agenthalt-console".into())
                .spawn(move || {
                    for line in BufReader::new(input).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| format!("cannot read the terminal ({e})"))?;
            Ok(Terminal { lines: Mutex::new(rx), out: Mutex::new(out) })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Asks on the terminal (`/dev/tty`, so that standard input and output stay the program's).
/// One question at a time; `y` or `yes` approves, anything else refuses; no answer within the
/// timeout refuses.
#[derive(Debug, Clone)]
pub struct Console {
    timeout: Duration,
}

impl Console {
    /// A console handler that waits `timeout` for each answer.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Whether there is a terminal to ask on, or why not (with none, every request is refused).
    ///
    /// # Errors
    /// The process has no terminal (`/dev/tty` cannot be opened).
    pub fn terminal_ready() -> Result<(), String> {
        terminal().map(|_| ())
    }
}

#[async_trait]
impl ApprovalHandler for Console {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        let question = question(request, self.timeout);
        let timeout = self.timeout;
        // The terminal blocks: ask on a thread of its own.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("agenthalt-console-ask".into())
            .spawn(move || {
                let _ = tx.send(ask(&question, timeout));
            })
            .map_err(|e| ApprovalError::Channel(format!("cannot ask on the terminal: {e}")))?;
        let answer = rx.await.unwrap_or_else(|_| Err("the console failed".into()));
        Ok(match answer {
            Ok(Some(true)) => ApprovalResponse::approve(approver()),
            Ok(Some(false)) => ApprovalResponse::refuse(approver()).with_reason("refused at the console"),
            Ok(None) => ApprovalResponse::refuse("console")
                .with_reason(format!("no answer at the console within {} s", timeout.as_secs())),
            Err(why) => ApprovalResponse::refuse("console").with_reason(format!("{why}: approval refused")),
        })
    }
}

/// Who answers at the console.
fn approver() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    if user.is_empty() { "console".into() } else { format!("console:{user}") }
}

/// Shows `question` and waits for a line: `Some(yes)`, or `None` after `timeout`.
fn ask(question: &str, timeout: Duration) -> Result<Option<bool>, String> {
    let terminal = terminal()?;
    // One question at a time: a second waits until the first is answered.
    let lines = terminal.lines.lock().unwrap_or_else(PoisonError::into_inner);
    while lines.try_recv().is_ok() {}
    {
        let mut out = terminal.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(question.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("cannot write ({e})"))?;
    }
    match lines.recv_timeout(timeout) {
        Ok(line) => Ok(Some(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut out = terminal.out.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(out, "\n(no answer: refused)");
            Ok(None)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the terminal closed".into()),
    }
}

/// The question, every value escaped so that no argument can move the cursor or fake a line.
fn question(request: &ApprovalRequest<'_>, timeout: Duration) -> String {
    let ctx = request.context;
    let outcome = request.outcome;
    let args = outcome.modified_arguments().unwrap_or(&ctx.arguments);
    let args = serde_json::to_string_pretty(args).unwrap_or_default();
    let mut q = String::from("\n=== approval needed ===\n");
    q.push_str(&format!("call:      {}\n", clean(&ctx.call_id)));
    q.push_str(&format!("function:  {}\n", clean(&ctx.function_name)));
    if let Some(agent) = &ctx.agent_id {
        q.push_str(&format!("agent:     {}\n", clean(agent)));
    }
    if let Some(session) = &ctx.session_id {
        q.push_str(&format!("session:   {}\n", clean(session)));
    }
    q.push_str(&format!("risk:      {:.2}\n", outcome.max_risk_score()));
    for reason in outcome.approval_reasons() {
        q.push_str(&format!("reason:    {}\n", clean(reason)));
    }
    q.push_str("arguments:\n");
    for line in args.lines() {
        q.push_str(&format!("  {}\n", clean(line)));
    }
    q.push_str(&format!("Approve? [y/N] (refused in {} s): ", timeout.as_secs()));
    q
}

/// `s` with every control character escaped.
fn clean(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use halt_core::{CallContext, Decision, Outcome};
    use serde_json::json;

    #[test]
    fn the_question_shows_the_redacted_call_and_escapes_control_characters() {
        let ctx = CallContext::new("send\u{1b}[2Jmail")
            .with_arguments(json!({"to": "a@b.c", "ssn": "123-45-6789"}))
            .unwrap()
            .with_agent("bot\rX");
        let redacted = json!({"to": "a@b.c", "ssn": "[REDACTED]"});
        let serde_json::Value::Object(redacted) = redacted else { unreachable!() };
        let decisions = vec![
            Decision::modify("redacted", redacted).with_guard("sensitive".into()),
            Decision::require_approval("outbound mail\nAPPROVED").with_guard("scope".into()),
        ];
        let outcome = Outcome::new(ctx.call_id.clone(), ctx.function_name.clone(), decisions, &ctx.arguments);
        let q = question(
            &ApprovalRequest { context: &ctx, outcome: &outcome, expires_at: 0.0, approval_id: None },
            Duration::from_secs(30),
        );
        assert!(q.contains("function:  send\\u{1b}[2Jmail\n"), "{q}");
        assert!(q.contains("agent:     bot\\rX\n"), "{q}");
        assert!(q.contains("reason:    outbound mail\\nAPPROVED\n"), "{q}");
        assert!(q.contains("[REDACTED]") && !q.contains("123-45-6789"), "{q}");
        assert!(q.contains("risk:      0.70"), "{q}");
        assert!(q.ends_with("Approve? [y/N] (refused in 30 s): "), "{q}");
    }
}
