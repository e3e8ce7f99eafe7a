//! The handlers that answer by themselves, a callback of yours, and the console with no terminal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use halt_core::{CallContext, Decision};
use halt_engine::{ApprovalHandler, ApprovalResponse, Engine};
use halt_hil::{AutoApprove, AutoDeny, Callback, Console, OwnedRequest};
use halt_testing::guards::StaticGuard;
use serde_json::json;

fn engine(handler: impl ApprovalHandler) -> Engine {
    Engine::builder()
        .guard(StaticGuard::new("ask", Decision::require_approval("a person decides")))
        .approval_handler(handler)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_callback_decides_from_the_call() {
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&asked);
    let handler = Callback::new(move |request: OwnedRequest| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            assert_eq!(request.outcome.approval_reasons(), ["a person decides"]);
            let small = request.context.arguments.get("amount").and_then(serde_json::Value::as_f64) < Some(10.0);
            Ok(if small { ApprovalResponse::approve("bot-policy") } else { ApprovalResponse::refuse("bot-policy") })
        }
    });
    let engine = engine(handler);
    let call = |amount: f64| CallContext::new("buy").with_arguments(json!({"amount": amount})).unwrap();
    assert!(engine.evaluate(call(5.0)).await.is_allowed());
    assert!(engine.evaluate(call(50.0)).await.is_denied());
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn auto_deny_refuses_everything() {
    let o = engine(AutoDeny).evaluate(CallContext::new("buy")).await;
    assert!(o.is_denied());
    assert_eq!(o.approver(), Some("auto-deny"));
}

/// Counts the warnings logged while it is the default subscriber.
struct Warnings(Arc<AtomicUsize>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn auto_approve_approves_and_warns_every_time() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(Warnings(Arc::clone(&warnings)));
    let engine = engine(AutoApprove);
    for n in 1..=3 {
        let o = engine.evaluate_blocking(CallContext::new("buy"));
        assert!(o.is_allowed());
        assert_eq!(o.approver(), Some("auto-approve"));
        assert_eq!(warnings.load(Ordering::SeqCst), n, "one warning per approval");
    }
}

const CHILD: &str = "HALT_HIL_CONSOLE_CHILD";

#[test]
fn with_no_terminal_the_console_refuses_and_says_why() {
    // `setsid` starts this test binary again with no controlling terminal.
    let out = std::process::Command::new("setsid")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "console_without_terminal", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}");
}

/// Run by [`with_no_terminal_the_console_refuses_and_says_why`] in a process with no terminal.
#[tokio::test]
#[ignore = "a helper: runs in the process the console test starts"]
async fn console_without_terminal() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    assert!(Console::terminal_ready().unwrap_err().starts_with("no terminal to ask on"));
    let o = engine(Console::new(std::time::Duration::from_secs(5))).evaluate(CallContext::new("buy")).await;
    assert!(o.is_denied());
    assert_eq!(o.approver(), Some("console"));
}
