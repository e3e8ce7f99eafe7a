//! Mock guards for engine and integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use halt_core::store::{CounterSpec, ReserveOutcome, Window};
use halt_core::{Call, Decision, Guard, GuardError, JsonObject, async_trait};
use serde_json::Value;

/// Returns the same decision for every call, optionally only for one function, and counts its
/// evaluations.
#[derive(Debug, Clone)]
pub struct StaticGuard {
    name: String,
    decision: Decision,
    only: Option<String>,
    pure: bool,
    evaluations: Arc<AtomicUsize>,
}

impl StaticGuard {
    /// A guard named `name` that always decides `decision`.
    #[must_use]
    pub fn new(name: &str, decision: Decision) -> Self {
        Self { name: name.to_owned(), decision, only: None, pure: false, evaluations: Arc::default() }
    }

    /// Says it decides from the call alone ([`Guard::is_pure`]), as it does.
    #[must_use]
    pub fn pure(mut self) -> Self {
        self.pure = true;
        self
    }

    /// Applies only to the (normalised) function `function`.
    #[must_use]
    pub fn only_for(mut self, function: &str) -> Self {
        self.only = Some(function.to_owned());
        self
    }

    /// A counter of evaluations, shared with clones.
    #[must_use]
    pub fn evaluations(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.evaluations)
    }
}

#[async_trait]
impl Guard for StaticGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, call: &Call<'_>) -> bool {
        self.only.as_deref().is_none_or(|f| f == call.function())
    }

    async fn evaluate(&self, _call: &Call<'_>) -> Result<Decision, GuardError> {
        self.evaluations.fetch_add(1, Ordering::SeqCst);
        Ok(self.decision.clone())
    }

    fn is_pure(&self) -> bool {
        self.pure
    }
}

/// How a [`FailingGuard`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Returns an error.
    Error,
    /// Panics in `evaluate`.
    Panic,
    /// Panics in `applies`.
    PanicInApplies,
    /// Sleeps for an hour (longer than any guard timeout).
    Hang,
}

/// A guard that fails in a chosen way.
#[derive(Debug, Clone)]
pub struct FailingGuard {
    name: String,
    failure: Failure,
}

impl FailingGuard {
    /// A guard named `name` failing with `failure`.
    #[must_use]
    pub fn new(name: &str, failure: Failure) -> Self {
        Self { name: name.to_owned(), failure }
    }
}

#[async_trait]
impl Guard for FailingGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies(&self, _call: &Call<'_>) -> bool {
        assert!(self.failure != Failure::PanicInApplies, "applies blew up");
        true
    }

    async fn evaluate(&self, _call: &Call<'_>) -> Result<Decision, GuardError> {
        match self.failure {
            Failure::Error => Err(GuardError::Other("backend said no".into())),
            Failure::Panic => panic!("guard blew up"),
            Failure::PanicInApplies => Ok(Decision::allow("unreachable")),
            Failure::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Decision::allow("woke up"))
            }
        }
    }
}

/// Reserves a fixed cost on one daily-style counter: allows when it fits, denies when it does
/// not. The cost is settleable.
#[derive(Debug, Clone)]
pub struct ReservingGuard {
    name: String,
    key: String,
    amount: i64,
    limit: i64,
}

impl ReservingGuard {
    /// Reserves `amount` micro-units on counter `key`, limited to `limit`.
    #[must_use]
    pub fn new(name: &str, key: &str, amount: i64, limit: i64) -> Self {
        Self { name: name.to_owned(), key: key.to_owned(), amount, limit }
    }

    /// The counter this guard charges, for reading it back.
    #[must_use]
    pub fn window() -> Window {
        Window::Idle { idle: Duration::from_secs(86_400) }
    }
}

#[async_trait]
impl Guard for ReservingGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let spec = CounterSpec::new(self.key.clone(), Self::window(), self.amount, Some(self.limit));
        Ok(match call.reserve_cost(vec![spec]).await? {
            ReserveOutcome::Reserved { .. } => Decision::allow("within limit"),
            ReserveOutcome::Rejected { current, limit, .. } => {
                Decision::deny(format!("limit reached: {current}/{limit}"))
            }
        })
    }
}

/// Sets one argument to a value (a modification).
#[derive(Debug, Clone)]
pub struct SettingGuard {
    name: String,
    key: String,
    value: Value,
}

impl SettingGuard {
    /// Sets argument `key` to `value`.
    #[must_use]
    pub fn new(name: &str, key: &str, value: Value) -> Self {
        Self { name: name.to_owned(), key: key.to_owned(), value }
    }
}

#[async_trait]
impl Guard for SettingGuard {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
        let mut args: JsonObject = call.arguments().clone();
        args.insert(self.key.clone(), self.value.clone());
        Ok(Decision::modify(format!("set {}", self.key), args))
    }
}

/// Evaluates `n` calls concurrently (each on its own task; needs a multi-threaded runtime) and
/// returns how many were allowed.
pub async fn count_allowed_concurrently(
    engine: &halt_engine::Engine,
    n: usize,
    call: impl Fn(usize) -> halt_core::CallContext,
) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let engine = engine.clone();
            let ctx = call(i);
            tokio::spawn(async move { engine.evaluate(ctx).await.is_allowed() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.expect("evaluation task panicked"));
    }
    allowed
}
