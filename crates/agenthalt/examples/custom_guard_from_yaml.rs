//! A third party's guard, configured from the same YAML file as the built-in ones.
//!
//! Run with `cargo run -p agenthalt --example custom_guard_from_yaml`.

use agenthalt::config::PolicyLoader;
use agenthalt::{Call, CallContext, Decision, FactoryError, Guard, GuardError, TypedFactory, async_trait};
use serde::Deserialize;

/// Settings of the guard, as written under `guards.acme_quiet_hours` in YAML.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct QuietHoursConfig {
    /// First UTC hour of the quiet period.
    from_hour: u8,
    /// Last UTC hour of the quiet period.
    to_hour: u8,
}

/// Asks a human for any call made during quiet hours (UTC), using the engine's clock.
#[derive(Debug)]
struct QuietHours {
    name: String,
    config: QuietHoursConfig,
}

#[async_trait]
impl Guard for QuietHours {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let secs_of_day = call.now().as_micros() / 1_000_000 % 86_400;
        let hour = u8::try_from(secs_of_day / 3600).unwrap_or(0);
        let quiet = (self.config.from_hour..=self.config.to_hour).contains(&hour);
        Ok(if quiet {
            Decision::require_approval(format!("quiet hours ({hour}:00 UTC)"))
        } else {
            Decision::allow("working hours")
        })
    }
}

const POLICY: &str = "
guards:
  scope:
    deny_functions: [\"drop_*\"]
  acme_quiet_hours:
    from_hour: 0
    to_hour: 23
";

#[allow(clippy::print_stdout, reason = "an example prints what it shows")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut loader = PolicyLoader::new();
    loader.register(TypedFactory::new("acme_quiet_hours", |name: &str, config: QuietHoursConfig| {
        if config.from_hour > 23 || config.to_hour > 23 {
            return Err(FactoryError::invalid("from_hour", "hours are 0..=23"));
        }
        Ok(QuietHours { name: name.to_owned(), config })
    }))?;
    let engine = loader.load_str(POLICY, "policy.yaml")?.build_engine()?;
    for name in ["search_web", "drop_table"] {
        let outcome = engine.evaluate_blocking(CallContext::new(name));
        let reasons: Vec<&str> = outcome.decisions().iter().map(|d| d.reason()).collect();
        println!("{name:<12} -> {:<16} {}", outcome.decision().as_str(), reasons.join("; "));
    }
    // A mistake in the third party's settings is reported like any other.
    let bad = loader.load_str("guards:\n  acme_quiet_hours:\n    from_hour: 0\n    to_hours: 5\n", "policy.yaml");
    if let Err(e) = bad {
        println!("{e}");
    }
    Ok(())
}
