//! `#[guarded]` functions under a budget and a deletion policy: each call goes through the
//! engine first; a blocked one returns `Err` and its body never runs.
//!
//! Run with `cargo run -p guarded-fn`.

#![allow(clippy::print_stdout, reason = "an example shows what it does")]

use std::sync::LazyLock;

use agenthalt::config::PolicyLoader;
use agenthalt::{Blocked, Engine, guarded};

const POLICY: &str = r#"
guards:
  budget:
    max_daily_spend: 1.00
    default_cost: 0
    cost_estimator:
      summarize: 0.40
  deletion:
    protected_resources: ["inbox", "sent"]
    max_deletions_per_day: 10
"#;

#[allow(clippy::expect_used, reason = "the example's own policy: a mistake in it is a bug to see at once")]
static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let policy = PolicyLoader::new().load_str(POLICY, "policy.yaml").expect("the example's policy is valid");
    policy.build_engine().expect("its guards have distinct names")
});

/// The tools' error: blocked by policy, or failed on their own.
#[derive(Debug)]
enum ToolError {
    Blocked(Blocked),
}

impl From<Blocked> for ToolError {
    fn from(b: Blocked) -> Self {
        Self::Blocked(b)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Blocked(b) => write!(f, "{b}"),
        }
    }
}

/// A paid model call: 0.40 a time against a budget of 1.00 a day.
#[guarded(engine = ENGINE, agent_id = "summarizer")]
fn summarize(document: String) -> Result<String, ToolError> {
    Ok(format!("summary of {} characters", document.len()))
}

/// Deletes a mail folder, unless it is protected.
#[guarded(engine = ENGINE, agent_id = "mail-bot")]
async fn delete_folder(path: String) -> Result<String, ToolError> {
    Ok(format!("deleted {path}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // 0.40 a summary against 1.00 a day: the third is over budget, and its body never runs.
    for n in 1..=3 {
        match summarize("a long quarterly report".into()) {
            Ok(summary) => println!("summarize #{n}: {summary}"),
            Err(e) => println!("summarize #{n}: {e}"),
        }
    }
    // The inbox is protected.
    for folder in ["newsletters", "inbox"] {
        match delete_folder(folder.into()).await {
            Ok(done) => println!("delete_folder({folder}): {done}"),
            Err(e) => println!("delete_folder({folder}): {e}"),
        }
    }
}
