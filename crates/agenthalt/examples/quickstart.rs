//! Quick start: an engine with two small guards, a daily budget and a human approval step.
//!
//! Run with `cargo run -p agenthalt --example quickstart`.

use std::time::Duration;

use agenthalt::store::{CounterSpec, ReserveOutcome, Window};
use agenthalt::{ApprovalResponse, Call, CallContext, Decision, Engine, Guard, GuardError, Money, async_trait};
use serde_json::json;

/// Charges each call's `estimated_cost` against a daily budget.
#[derive(Debug)]
struct DailyBudget {
    limit: Money,
}

#[async_trait]
impl Guard for DailyBudget {
    fn name(&self) -> &str {
        "daily_budget"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let cost = match call.arguments().get("estimated_cost").map(Money::from_json) {
            Some(Ok(cost)) => cost,
            Some(Err(e)) => return Ok(Decision::deny(format!("estimated_cost: {e}"))),
            None => Money::ZERO,
        };
        let day = call.now().utc_day();
        let counter = CounterSpec::new(
            format!("example/day/{}", day.label),
            Window::Bucket { expires_at: day.end },
            cost.micros(),
            Some(self.limit.micros()),
        );
        Ok(match call.reserve_cost(vec![counter]).await? {
            ReserveOutcome::Reserved { totals, .. } => {
                Decision::allow(format!("spent {} of {}", Money::from_micros(totals[0]), self.limit))
            }
            ReserveOutcome::Rejected { current, .. } => Decision::deny(format!(
                "daily budget: {} spent, {} more would pass {}",
                Money::from_micros(current),
                cost,
                self.limit
            )),
        })
    }
}

/// Asks a human before any email leaves.
#[derive(Debug)]
struct EmailNeedsApproval;

#[async_trait]
impl Guard for EmailNeedsApproval {
    fn name(&self) -> &str {
        "email_approval"
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        call.function() == "send_email"
    }

    async fn evaluate(&self, _: &Call<'_>) -> Result<Decision, GuardError> {
        Ok(Decision::require_approval("emails need a human"))
    }
}

#[allow(clippy::print_stdout, reason = "an example prints what it shows")]
fn show(label: &str, outcome: &agenthalt::Outcome) {
    let reasons: Vec<&str> = outcome.decisions().iter().map(|d| d.reason()).collect();
    println!("{label:<28} -> {:<16} {}", outcome.decision().as_str(), reasons.join("; "));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .guard(DailyBudget { limit: "1.00".parse()? })
        .guard(EmailNeedsApproval)
        .approval_timeout(Duration::from_secs(60))
        .build()?;

    for i in 0..4 {
        let call = CallContext::new("gpt4_call").with_arguments(json!({"estimated_cost": 0.3}))?;
        show(&format!("gpt4_call #{}", i + 1), &engine.evaluate(call).await);
    }
    let bad = CallContext::new("gpt4_call").with_arguments(json!({"estimated_cost": "NaN"}))?;
    show("gpt4_call with cost NaN", &engine.evaluate(bad).await);

    let email =
        CallContext::new("Send_Email").with_call_id("mail-1").with_arguments(json!({"to": "cfo@example.com"}))?;
    let outcome = engine.evaluate(email).await;
    show("Send_Email", &outcome);
    if outcome.needs_approval() {
        engine.resolve_approval("mail-1", &ApprovalResponse::approve("alice")).await?;
        #[allow(clippy::print_stdout, reason = "an example prints what it shows")]
        {
            println!("{:<28} -> approved by alice", "mail-1");
        }
    }
    Ok(())
}
