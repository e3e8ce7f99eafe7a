//! A third party's guard, built against `halt-core` alone: each agent may open at most
//! `max_per_day` support tickets a UTC day. The count lives in the engine's store, so it holds
//! across processes on a shared store, and only tickets that are really opened count.
//!
//! ```
//! let mut loader = halt_config::PolicyLoader::new();
//! loader.register(acme_guard::factory())?;
//! let policy = loader.load_str("guards:\n  acme_tickets:\n    max_per_day: 2\n", "policy.yaml")?;
//! let engine = policy.build_engine()?;
//! let open = || halt_core::CallContext::new("open_ticket").with_agent("bot");
//! assert!(engine.evaluate_blocking(open()).is_allowed());
//! assert!(engine.evaluate_blocking(open()).is_allowed());
//! assert!(engine.evaluate_blocking(open()).is_denied());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use halt_core::store::{CounterSpec, ReserveOutcome, Window, key, key_part};
use halt_core::{Call, Decision, FactoryError, Guard, GuardError, GuardFactory, TypedFactory, async_trait};
use serde::Deserialize;

/// Settings, as written under `guards.acme_tickets`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketConfig {
    /// The most tickets one agent may open per UTC day.
    pub max_per_day: u32,
}

/// Limits the support tickets each agent opens per day.
#[derive(Debug)]
pub struct TicketLimit {
    name: String,
    max_per_day: u32,
}

#[async_trait]
impl Guard for TicketLimit {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        call.function() == "open_ticket"
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let agent = key_part(call.context().agent_id.as_deref().unwrap_or("-"));
        let day = call.now().utc_day();
        let counter = key(&["acme", &self.name, &agent, &day.label]);
        let window = Window::Bucket { expires_at: day.end };
        // Reserved now, counted only if the ticket is opened (the engine commits or releases).
        let spec = CounterSpec::new(counter, window, 1, Some(i64::from(self.max_per_day)));
        Ok(match call.reserve(vec![spec]).await? {
            ReserveOutcome::Reserved { .. } => Decision::allow("within the daily ticket limit"),
            ReserveOutcome::Rejected { .. } => {
                Decision::deny(format!("an agent may open {} tickets a day", self.max_per_day))
            }
        })
    }
}

/// The factory a policy file names as `acme_tickets`.
#[must_use]
pub fn factory() -> impl GuardFactory {
    TypedFactory::new("acme_tickets", |name: &str, config: TicketConfig| {
        if config.max_per_day == 0 {
            return Err(FactoryError::invalid("max_per_day", "must be at least 1"));
        }
        Ok(TicketLimit { name: name.to_owned(), max_per_day: config.max_per_day })
    })
}
