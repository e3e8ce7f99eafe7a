//! `#[guarded]` at run time: allowed calls run the body, blocked ones never do, a guard's
//! change reaches the parameters, and approvals go through the engine's handler.

#![cfg(feature = "macros")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use agenthalt::sensitive::{SensitiveConfig, SensitiveGuard};
use agenthalt::{
    ApprovalError, ApprovalHandler, ApprovalRequest, ApprovalResponse, Blocked, Call, Decision, Engine, Guard,
    GuardError, async_trait, guarded,
};

#[derive(Debug)]
enum AppError {
    Blocked(Blocked),
}

impl From<Blocked> for AppError {
    fn from(b: Blocked) -> Self {
        Self::Blocked(b)
    }
}

/// Denies deletes of `inbox`, asks about payments over 100.
#[derive(Debug)]
struct Rules;

#[async_trait]
impl Guard for Rules {
    fn name(&self) -> &str {
        "rules"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let args = call.arguments();
        Ok(match call.function() {
            "delete_folder" if args.get("folder").and_then(|v| v.as_str()) == Some("inbox") => {
                Decision::deny("the inbox is protected")
            }
            "pay" if args.get("amount").and_then(serde_json::Value::as_f64).is_some_and(|a| a > 100.0) => {
                Decision::require_approval("a large payment")
            }
            _ => Decision::allow("ok"),
        })
    }
}

/// Approves payments up to 500.
#[derive(Debug)]
struct Treasurer;

#[async_trait]
impl ApprovalHandler for Treasurer {
    async fn request_approval(&self, request: &ApprovalRequest<'_>) -> Result<ApprovalResponse, ApprovalError> {
        let amount = request.context.arguments.get("amount").and_then(serde_json::Value::as_f64).unwrap_or(f64::MAX);
        Ok(if amount <= 500.0 { ApprovalResponse::approve("treasurer") } else { ApprovalResponse::refuse("treasurer") })
    }
}

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let redact = SensitiveConfig { redact_on_modify: true, ..SensitiveConfig::default() };
    Engine::builder()
        .guard(Rules)
        .guard(SensitiveGuard::new(redact).unwrap())
        .approval_handler(Treasurer)
        .build()
        .unwrap()
});

static RAN: AtomicUsize = AtomicUsize::new(0);

#[guarded(engine = ENGINE, agent_id = "mail-bot")]
fn delete_folder(folder: String) -> Result<String, AppError> {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(format!("deleted {folder}"))
}

#[guarded(engine = ENGINE)]
fn send_note(to: &str, body: String) -> Result<String, AppError> {
    Ok(format!("{to}: {body}"))
}

#[guarded(engine = ENGINE, name = "pay", session_id = format!("s-{}", 1))]
async fn pay_invoice(amount: f64, memo: Option<String>) -> Result<f64, AppError> {
    let _ = memo;
    Ok(amount)
}

struct Mailer {
    engine: Arc<Engine>,
    sent: AtomicUsize,
}

impl Mailer {
    #[guarded(engine = self.engine, name = "delete_folder")]
    fn purge(&self, folder: String) -> Result<(), AppError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let _ = folder;
        Ok(())
    }
}

#[test]
fn an_allowed_call_runs_the_body_and_a_denied_one_never_does() {
    let before = RAN.load(Ordering::SeqCst);
    assert_eq!(delete_folder("spam".into()).unwrap(), "deleted spam");
    assert_eq!(RAN.load(Ordering::SeqCst), before + 1);
    let Err(AppError::Blocked(blocked)) = delete_folder("inbox".into()) else { panic!("the inbox was deleted") };
    assert_eq!(RAN.load(Ordering::SeqCst), before + 1, "the body did not run");
    assert_eq!(blocked.outcome().denial_reasons(), ["the inbox is protected"]);
    assert_eq!(blocked.to_string(), "`delete_folder` was blocked: the inbox is protected");
}

#[test]
fn a_guards_change_reaches_the_parameters() {
    let out = send_note_owned("ops".into(), "my ssn is 123-45-6789".into()).unwrap();
    assert!(!out.contains("123-45-6789"), "{out}");
    assert!(out.contains("[REDACTED"), "{out}");
}

#[guarded(engine = ENGINE, name = "send_note")]
fn send_note_owned(to: String, body: String) -> Result<String, AppError> {
    Ok(format!("{to}: {body}"))
}

#[test]
fn a_change_to_a_parameter_passed_by_reference_refuses_the_call() {
    assert_eq!(send_note("ops", "hello".into()).unwrap(), "ops: hello");
    let Err(AppError::Blocked(b)) = send_note("ssn 123-45-6789", "hello".into()) else { panic!("ran") };
    assert!(b.to_string().contains("passed by reference"), "{b}");
}

#[tokio::test]
async fn approvals_go_through_the_engines_handler() {
    assert_eq!(pay_invoice(50.0, None).await.unwrap(), 50.0);
    assert_eq!(pay_invoice(300.0, Some("Q3".into())).await.unwrap(), 300.0, "approved by the treasurer");
    let Err(AppError::Blocked(b)) = pay_invoice(900.0, None).await else { panic!("paid") };
    assert!(b.approval_refused());
    assert_eq!(b.to_string(), "`pay` was not approved");
}

#[test]
fn methods_are_guarded_with_the_engine_of_self() {
    let mailer =
        Mailer { engine: Arc::new(Engine::builder().guard(Rules).build().unwrap()), sent: AtomicUsize::new(0) };
    mailer.purge("spam".into()).unwrap();
    assert!(mailer.purge("inbox".into()).is_err());
    assert_eq!(mailer.sent.load(Ordering::SeqCst), 1);
}
