//! The [`Engine`]: its guards, hooks and settings, shared by every evaluation.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use halt_core::store::StateStore;
use halt_core::{CallContext, Clock, Guard, GuardName, Outcome, names};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::approval::ApprovalHandler;
use crate::builder::EngineBuilder;
use crate::events::EngineEvent;
use crate::record::Recorder;

/// The name engine-level decisions carry (invalid calls, failed hooks, failed commits).
pub const ENGINE_GUARD_NAME: &str = "engine";

/// A hook run before the guards; it may rewrite the call. An error denies the call.
pub type PreHook = Arc<dyn Fn(&mut CallContext) -> Result<(), HookError> + Send + Sync>;
/// A hook run after the outcome is final. It must be quick; a panic in it is contained.
pub type PostHook = Arc<dyn Fn(&CallContext, &Outcome) + Send + Sync>;

/// A pre-hook's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

/// Whether decisions are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decisions are enforced (the default).
    #[default]
    Enforce,
    /// Shadow mode: decisions are computed, recorded and streamed, but every call runs.
    Monitor,
}

/// Errors changing the engine's guards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A guard of that name is already registered.
    #[error("a guard named `{0}` is already registered")]
    DuplicateGuard(String),
    /// No guard of that name is registered.
    #[error("no guard named `{0}`")]
    UnknownGuard(String),
    /// The guard's name is unusable.
    #[error("invalid guard name `{name}`: {reason}")]
    InvalidGuardName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A registered guard and whether it is enabled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardInfo {
    /// The guard's name.
    pub name: String,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// Its summary ([`Guard::describe`]).
    pub settings: serde_json::Value,
}

#[derive(Clone)]
pub(crate) struct GuardEntry {
    pub(crate) guard: Arc<dyn Guard>,
    pub(crate) name: GuardName,
    pub(crate) enabled: Arc<AtomicBool>,
}

/// What one evaluation reads: guards and hooks, replaced whole on every change so evaluations
/// take one cheap snapshot. Aligned to its own cache lines, so that the reference count before
/// it (written on every evaluation) and what threads preparing calls read do not share one.
#[derive(Default, Clone)]
#[repr(align(128))]
pub(crate) struct Snapshot {
    pub(crate) guards: Vec<GuardEntry>,
    pub(crate) pre: Vec<PreHook>,
    pub(crate) post: Vec<PostHook>,
}

/// A value alone on its cache lines (two, as adjacent lines are fetched together), so that
/// threads writing it and threads reading its neighbours do not slow each other.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct Inner {
    pub(crate) snapshot: CachePadded<RwLock<Arc<Snapshot>>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) events: broadcast::Sender<EngineEvent>,
    /// Set once anyone subscribes, so engines nobody watches skip building events.
    pub(crate) watched: AtomicBool,
    /// Counts the changes of `snapshot` (while holding its lock), so that a `Preparer` sees
    /// whether the guards changed without taking the lock, and a prepared call whether it was
    /// prepared against the current ones.
    pub(crate) version: CachePadded<AtomicU64>,
    /// Tells this engine (and its clones) from every other in the process.
    pub(crate) id: u64,
    pub(crate) guard_timeout: Duration,
    pub(crate) approval_timeout: Duration,
    pub(crate) settle_window: Duration,
    pub(crate) monitor: AtomicBool,
    pub(crate) approvals: Option<Arc<dyn ApprovalHandler>>,
    pub(crate) recorder: Option<Arc<dyn Recorder>>,
}

/// Evaluates proposed calls against the registered guards and keeps the books on their effects.
///
/// Cheap to clone (a handle to shared state); safe to share across tasks and threads.
///
/// ```
/// use halt_core::{async_trait, Call, CallContext, Decision, Guard, GuardError};
/// use halt_engine::Engine;
///
/// #[derive(Debug)]
/// struct NoDrops;
///
/// #[async_trait]
/// impl Guard for NoDrops {
///     fn name(&self) -> &str { "no_drops" }
///     async fn evaluate(&self, call: &Call<'_>) -> Result<Decision, GuardError> {
///         Ok(if call.function().starts_with("drop_") {
///             Decision::deny("dropping is not allowed")
///         } else {
///             Decision::allow("ok")
///         })
///     }
/// }
///
/// let engine = Engine::builder().guard(NoDrops).build()?;
/// let outcome = engine.evaluate_blocking(CallContext::new("DROP_table"));
/// assert!(outcome.is_denied());
/// assert_eq!(outcome.denial_reasons(), ["dropping is not allowed"]);
/// # Ok::<(), halt_engine::EngineError>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.guards().into_iter().map(|g| g.name).collect();
        f.debug_struct("Engine")
            .field("guards", &names)
            .field("mode", &self.mode())
            .field("clock", &self.inner.clock)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine with no guards, a memory store and the system clock.
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build_empty()
    }

    /// Starts building an engine.
    #[must_use]
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The engine's clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// How long a call that needs a human waits for an answer, its reservations held.
    #[must_use]
    pub fn approval_timeout(&self) -> Duration {
        self.inner.approval_timeout
    }

    /// The engine's state store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.store
    }

    /// Enforce or monitor.
    #[must_use]
    pub fn mode(&self) -> Mode {
        if self.inner.monitor.load(Ordering::Relaxed) { Mode::Monitor } else { Mode::Enforce }
    }

    /// Switches between enforcing and monitoring.
    pub fn set_mode(&self, mode: Mode) {
        self.inner.monitor.store(mode == Mode::Monitor, Ordering::Relaxed);
    }

    /// Registers a guard after the others.
    ///
    /// # Errors
    /// A guard with the same name exists, or the name is unusable.
    pub fn add_guard(&self, guard: impl Guard) -> Result<(), EngineError> {
        self.add_guard_arc(Arc::new(guard))
    }

    /// Registers a shared guard after the others.
    ///
    /// # Errors
    /// A guard with the same name exists, or the name is unusable.
    pub fn add_guard_arc(&self, guard: Arc<dyn Guard>) -> Result<(), EngineError> {
        let name = guard.name().to_owned();
        if let Err(e) = names::validate(&name) {
            return Err(EngineError::InvalidGuardName { name, reason: e.to_string() });
        }
        let mut result = Ok(());
        self.update(|s| {
            if s.guards.iter().any(|g| *g.name == *name) {
                result = Err(EngineError::DuplicateGuard(name.clone()));
            } else {
                let enabled = Arc::new(AtomicBool::new(true));
                s.guards.push(GuardEntry { guard, name: GuardName::new(&name), enabled });
            }
        });
        result
    }

    /// Removes a guard; returns it if it was registered.
    pub fn remove_guard(&self, name: &str) -> Option<Arc<dyn Guard>> {
        let mut removed = None;
        self.update(|s| {
            if let Some(pos) = s.guards.iter().position(|g| &*g.name == name) {
                removed = Some(s.guards.remove(pos).guard);
            }
        });
        removed
    }

    /// A registered guard.
    #[must_use]
    pub fn guard(&self, name: &str) -> Option<Arc<dyn Guard>> {
        self.snapshot().guards.iter().find(|g| &*g.name == name).map(|g| Arc::clone(&g.guard))
    }

    /// Every registered guard, in order.
    #[must_use]
    pub fn guards(&self) -> Vec<GuardInfo> {
        self.snapshot()
            .guards
            .iter()
            .map(|g| GuardInfo {
                name: g.name.to_string(),
                enabled: g.enabled.load(Ordering::Relaxed),
                settings: g.guard.describe(),
            })
            .collect()
    }

    /// Enables or disables a guard; a disabled guard is skipped.
    ///
    /// # Errors
    /// [`EngineError::UnknownGuard`].
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), EngineError> {
        let snapshot = self.snapshot();
        let g = snapshot
            .guards
            .iter()
            .find(|g| &*g.name == name)
            .ok_or_else(|| EngineError::UnknownGuard(name.to_owned()))?;
        g.enabled.store(enabled, Ordering::Relaxed);
        Ok(())
    }

    /// Adds a pre-hook, run after the existing ones.
    pub fn add_pre_hook(&self, hook: impl Fn(&mut CallContext) -> Result<(), HookError> + Send + Sync + 'static) {
        self.update(|s| s.pre.push(Arc::new(hook)));
    }

    /// Adds a post-hook, run after the existing ones.
    pub fn add_post_hook(&self, hook: impl Fn(&CallContext, &Outcome) + Send + Sync + 'static) {
        self.update(|s| s.post.push(Arc::new(hook)));
    }

    /// Replaces the snapshot with a changed copy (changes are rare; evaluations never wait).
    pub(crate) fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut current = self.inner.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Snapshot::clone(&current);
        f(&mut next);
        *current = Arc::new(next);
        self.inner.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.inner.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current snapshot and its version, read together under the lock (changes count the
    /// version up while they hold it).
    pub(crate) fn snapshot_and_version(&self) -> (Arc<Snapshot>, u64) {
        let current = self.inner.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&current), self.inner.version.load(Ordering::Acquire))
    }
}
