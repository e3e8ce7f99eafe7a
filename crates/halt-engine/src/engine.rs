//! The [`Engine`]: runs the guards on each call and settles the call's effects.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use halt_core::store::{CounterSpec, StateStore, StoreError, Window};
use halt_core::{
    Call, CallContext, Clock, Decision, DecisionKind, Effect, Guard, GuardError, GuardName, JsonObject, Money, Outcome,
    SystemClock, Timestamp, names,
};
use halt_store_memory::MemoryStore;

use crate::approval::{ApprovalHandler, ApprovalRequest, ApprovalResponse};
use crate::join::{self, Slot, panic_message};

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

/// What the engine streams to subscribers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A call was evaluated.
    Evaluated {
        /// The call, after pre-hooks, with the engine's timestamp.
        context: Arc<CallContext>,
        /// The outcome.
        outcome: Arc<Outcome>,
    },
    /// A held approval was answered (or found expired).
    ApprovalResolved {
        /// The call.
        call_id: String,
        /// The answer.
        approved: bool,
        /// Who answered.
        approver: Option<String>,
    },
    /// A call's cost was settled.
    Settled(Settlement),
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

/// Errors answering a held approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No approval is pending for the call: never asked, already answered, or expired.
    #[error("no pending approval for call `{0}` (never asked, already answered, or expired)")]
    NotPending(String),
    /// The approval was given after the call's reservations lapsed; the call must not run.
    #[error("approval for call `{0}` came after its hold expired")]
    Expired(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors settling a call's cost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// No cost was charged for the call (or its receipt expired).
    #[error("no charged cost recorded for call `{0}`")]
    UnknownCall(String),
    /// Another settlement of the same call won the race repeatedly.
    #[error("settlement of call `{0}` kept conflicting with another; try again")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of [`Engine::settle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settlement {
    /// The call.
    pub call_id: String,
    /// What had been charged to each counter (the estimate, or an earlier settlement).
    pub previous: Vec<Money>,
    /// The actual cost now charged.
    pub actual: Money,
    /// The counters corrected (windows that already ended are left alone).
    pub counters: usize,
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
struct GuardEntry {
    guard: Arc<dyn Guard>,
    name: GuardName,
    enabled: Arc<AtomicBool>,
}

/// What one evaluation reads: guards and hooks, replaced whole on every change so evaluations
/// take one cheap snapshot. Aligned to its own cache lines, so that the reference count before
/// it (written on every evaluation) and what threads preparing calls read do not share one.
#[derive(Default, Clone)]
#[repr(align(128))]
struct Snapshot {
    guards: Vec<GuardEntry>,
    pre: Vec<PreHook>,
    post: Vec<PostHook>,
}

/// A call made ready by [`Engine::prepare`] (or a [`Preparer`]), for
/// [`Engine::evaluate_prepared`].
pub(crate) struct Prepared {
    ctx: CallContext,
    /// The engine it was prepared for, and the version of its guards and hooks then.
    engine: u64,
    version: u64,
    stage: Stage,
}

/// Prepares calls for an engine on one thread ([`Engine::preparer`]). It keeps the engine's
/// guards and hooks as it last saw them and looks again only when they changed, so that
/// preparing a call writes no memory that other threads write too: neither the lock over the
/// guards nor their reference count.
pub(crate) struct Preparer<'e> {
    engine: &'e Engine,
    snapshot: Arc<Snapshot>,
    version: u64,
}

impl fmt::Debug for Preparer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preparer").field("version", &self.version).finish_non_exhaustive()
    }
}

impl Preparer<'_> {
    /// Prepares a call, as [`Engine::prepare`].
    #[must_use]
    pub(crate) fn prepare(&mut self, mut ctx: CallContext) -> Prepared {
        let engine = self.engine;
        if engine.inner.version.load(Ordering::Acquire) != self.version {
            (self.snapshot, self.version) = engine.snapshot_and_version();
        }
        let snapshot = &*self.snapshot;
        let stage = match run_pre_hooks(&snapshot.pre, &mut ctx) {
            Err(reason) => Stage::Refused(reason),
            Ok(()) => match check_call(&ctx) {
                Err(reason) => Stage::Invalid(reason),
                Ok(function) => {
                    let early = engine.decide_ahead(&ctx, &function, snapshot);
                    // Kept unless it is the name as given: a name normalisation only trimmed
                    // is borrowed, yet is not the raw name every guard must not see.
                    let function = (*function != *ctx.function_name).then(|| function.into_owned());
                    Stage::Checked(Checked { function, early })
                }
            },
        };
        Prepared { ctx, engine: engine.inner.id, version: self.version, stage }
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared").field("call_id", &self.ctx.call_id).field("stage", &self.stage).finish()
    }
}

/// Where an evaluation starts from.
enum Start {
    /// Nothing done yet (`Engine::evaluate`).
    Fresh,
    /// Prepared ahead for the engine `engine` at `version`.
    Prepared { engine: u64, version: u64, stage: Stage },
}

/// How far preparing a call went.
#[derive(Debug)]
enum Stage {
    /// A pre-hook refused it.
    Refused(String),
    /// Its names are invalid.
    Invalid(String),
    /// Checked.
    Checked(Checked),
}

/// A checked call, as `prepare` left it.
#[derive(Debug)]
struct Checked {
    /// Its normalised function name; `None` when that is the name as given.
    function: Option<String>,
    /// What each guard told ahead, by its place in the snapshot.
    early: Vec<Early>,
}

/// What a guard decided ahead of the call's turn.
#[derive(Debug, Default)]
enum Early {
    /// Nothing: it is asked in turn whether it applies, and decides.
    #[default]
    InTurn,
    /// It does not apply.
    Skipped,
    /// It applies, and decides in turn.
    Applies,
    Decided(Decision),
}

/// A value alone on its cache lines (two, as adjacent lines are fetched together), so that
/// threads writing it and threads reading its neighbours do not slow each other.
#[repr(align(128))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

struct Inner {
    snapshot: Line<RwLock<Arc<Snapshot>>>,
    clock: Arc<dyn Clock>,
    store: Arc<dyn StateStore>,
    events: broadcast::Sender<EngineEvent>,
    /// Set once anyone subscribes, so engines nobody watches skip building events.
    watched: AtomicBool,
    /// Counts the changes of `snapshot` (while holding its lock), so that a [`Preparer`] sees
    /// whether the guards changed without taking the lock, and a prepared call whether it was
    /// prepared against the current ones.
    version: Line<AtomicU64>,
    /// Tells this engine (and its clones) from every other in the process.
    id: u64,
    guard_timeout: Duration,
    approval_timeout: Duration,
    settle_window: Duration,
    monitor: AtomicBool,
    approvals: Option<Arc<dyn ApprovalHandler>>,
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
    inner: Arc<Inner>,
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

/// Builds an [`Engine`].
pub struct EngineBuilder {
    guards: Vec<Arc<dyn Guard>>,
    hooks: Snapshot,
    clock: Arc<dyn Clock>,
    store: Arc<dyn StateStore>,
    guard_timeout: Duration,
    approval_timeout: Duration,
    settle_window: Duration,
    mode: Mode,
    approvals: Option<Arc<dyn ApprovalHandler>>,
    event_capacity: usize,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder").field("guards", &self.guards.len()).finish_non_exhaustive()
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            guards: Vec::new(),
            hooks: Snapshot::default(),
            clock: Arc::new(SystemClock),
            store: Arc::new(MemoryStore::new()),
            guard_timeout: Duration::from_secs(5),
            approval_timeout: Duration::from_secs(900),
            settle_window: Duration::from_secs(3600),
            mode: Mode::Enforce,
            approvals: None,
            event_capacity: 1024,
        }
    }
}

impl EngineBuilder {
    /// Registers a guard (evaluated in registration order for ties).
    #[must_use]
    pub fn guard(mut self, guard: impl Guard) -> Self {
        self.guards.push(Arc::new(guard));
        self
    }

    /// Registers a shared guard.
    #[must_use]
    pub fn guard_arc(mut self, guard: Arc<dyn Guard>) -> Self {
        self.guards.push(guard);
        self
    }

    /// The clock guards read (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The clock, shared.
    #[must_use]
    pub fn clock_arc(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The state store (default: a [`MemoryStore`]).
    #[must_use]
    pub fn store(mut self, store: impl StateStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// The state store, shared.
    #[must_use]
    pub fn store_arc(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = store;
        self
    }

    /// How long the guards of one call may take together before the ones still running are
    /// denied fail-safe (default 5 s).
    #[must_use]
    pub fn guard_timeout(mut self, timeout: Duration) -> Self {
        self.guard_timeout = timeout;
        self
    }

    /// How long a call may wait for a human before it is refused and its reservations released
    /// (default 15 minutes).
    #[must_use]
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    /// How long after a call its charged cost can still be settled (default one hour). The
    /// engine keeps a small receipt per charged call for this long; zero keeps none, and then no
    /// call can be settled (a dry run such as `agenthalt eval`).
    #[must_use]
    pub fn settle_window(mut self, window: Duration) -> Self {
        self.settle_window = window;
        self
    }

    /// Enforce (default) or monitor.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Who answers approval requests. Without one, calls needing approval are held until
    /// [`Engine::resolve_approval`].
    #[must_use]
    pub fn approval_handler(mut self, handler: impl ApprovalHandler) -> Self {
        self.approvals = Some(Arc::new(handler));
        self
    }

    /// The approval handler, shared.
    #[must_use]
    pub fn approval_handler_arc(mut self, handler: Arc<dyn ApprovalHandler>) -> Self {
        self.approvals = Some(handler);
        self
    }

    /// Adds a pre-hook.
    #[must_use]
    pub fn pre_hook(
        mut self,
        hook: impl Fn(&mut CallContext) -> Result<(), HookError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.pre.push(Arc::new(hook));
        self
    }

    /// Adds a post-hook.
    #[must_use]
    pub fn post_hook(mut self, hook: impl Fn(&CallContext, &Outcome) + Send + Sync + 'static) -> Self {
        self.hooks.post.push(Arc::new(hook));
        self
    }

    /// How many events a subscriber may fall behind before it loses the oldest (default 1024).
    #[must_use]
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    /// Two guards with one name, or a guard name that is empty or holds control characters.
    pub fn build(mut self) -> Result<Engine, EngineError> {
        let guards = std::mem::take(&mut self.guards);
        let engine = self.build_empty();
        for g in guards {
            engine.add_guard_arc(g)?;
        }
        Ok(engine)
    }

    /// Builds the engine without its guards.
    fn build_empty(self) -> Engine {
        let (events, _) = broadcast::channel(self.event_capacity);
        Engine {
            inner: Arc::new(Inner {
                snapshot: Line(RwLock::new(Arc::new(self.hooks))),
                clock: self.clock,
                store: self.store,
                events,
                watched: AtomicBool::new(false),
                version: Line(AtomicU64::new(0)),
                id: {
                    static ENGINES: AtomicU64 = AtomicU64::new(0);
                    ENGINES.fetch_add(1, Ordering::Relaxed)
                },
                guard_timeout: self.guard_timeout,
                approval_timeout: self.approval_timeout,
                settle_window: self.settle_window,
                monitor: AtomicBool::new(self.mode == Mode::Monitor),
                approvals: self.approvals,
            }),
        }
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
    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut current = self.inner.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Snapshot::clone(&current);
        f(&mut next);
        *current = Arc::new(next);
        self.inner.version.fetch_add(1, Ordering::Release);
    }

    /// Subscribes to the event stream. A subscriber that falls behind loses the oldest events
    /// (and is told how many); it never slows evaluation.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.watched.store(true, Ordering::Relaxed);
        self.inner.events.subscribe()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.inner.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current snapshot and its version, read together under the lock (changes count the
    /// version up while they hold it).
    fn snapshot_and_version(&self) -> (Arc<Snapshot>, u64) {
        let current = self.inner.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&current), self.inner.version.load(Ordering::Acquire))
    }

    fn emit(&self, event: impl FnOnce() -> EngineEvent) {
        if self.watched() {
            let _ = self.inner.events.send(event());
        }
    }

    /// Whether anyone listens to events now.
    fn watched(&self) -> bool {
        self.inner.watched.load(Ordering::Relaxed) && self.inner.events.receiver_count() > 0
    }

    /// Evaluates a proposed call: runs the pre-hooks, the applicable guards (concurrently), then
    /// settles the call's effects and runs the post-hooks.
    ///
    /// Never fails: an invalid call, a failing hook, guard or store each give a DENY whose
    /// reason says what went wrong.
    pub fn evaluate(&self, ctx: CallContext) -> impl Future<Output = Outcome> + Send + '_ {
        self.decide(ctx, Start::Fresh)
    }

    /// A [`Preparer`]: for a thread that prepares many calls, as `agenthalt eval`'s reading
    /// thread does.
    #[must_use]
    pub(crate) fn preparer(&self) -> Preparer<'_> {
        let (snapshot, version) = self.snapshot_and_version();
        Preparer { engine: self, snapshot, version }
    }

    /// Evaluates a call [`Engine::prepare`] made ready: as [`Engine::evaluate`], with the pure
    /// guards' decisions already made.
    pub(crate) fn evaluate_prepared(&self, prepared: Prepared) -> impl Future<Output = Outcome> + Send + '_ {
        let Prepared { ctx, engine, version, stage } = prepared;
        self.decide(ctx, Start::Prepared { engine, version, stage })
    }

    /// What each guard can tell ahead of the call's turn, by its place in `snapshot`: whether
    /// it applies, and the pure guards' decisions (those that did not decide at once, failed or
    /// panicked are left to decide in turn, as any guard).
    fn decide_ahead(&self, ctx: &CallContext, function: &str, snapshot: &Snapshot) -> Vec<Early> {
        let now = self.inner.clock.now();
        let hold_until = now.saturating_add(self.inner.approval_timeout);
        let call = Call::new(ctx, function, now, &*self.inner.store, hold_until);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let early = snapshot
            .guards
            .iter()
            .map(|g| {
                if !g.enabled.load(Ordering::Relaxed) {
                    return Early::InTurn;
                }
                let decided = catch_unwind(AssertUnwindSafe(|| {
                    if !g.guard.applies(&call) {
                        return Early::Skipped;
                    }
                    if !g.guard.is_pure() {
                        return Early::Applies;
                    }
                    match g.guard.evaluate(&call).as_mut().poll(&mut cx) {
                        std::task::Poll::Ready(Ok(d)) => Early::Decided(d),
                        _ => Early::InTurn,
                    }
                }));
                decided.unwrap_or(Early::InTurn)
            })
            .collect();
        // A guard that called itself pure and reserved anyway broke its word: its decisions are
        // not kept, and what it reserved is released (or lapses at its hold).
        let effects = call.into_effects();
        if effects.is_empty() {
            return early;
        }
        for effect in effects {
            if let Effect::Reservation { id, .. } = effect {
                let _ = std::pin::pin!(self.inner.store.release(id, now)).poll(&mut cx);
            }
        }
        Vec::new()
    }

    /// Decides a call: runs its pre-hooks and checks it unless it was prepared, runs the guards,
    /// settles the effects. One future per call, made without running anything, and built as
    /// a plain function returning an `async move` block so that the call is held once in it (an
    /// `async fn` would hold its arguments twice, and this future is moved on every call).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice in a future moved on every call"
    )]
    fn decide(&self, mut ctx: CallContext, start: Start) -> impl Future<Output = Outcome> + Send + '_ {
        async move {
            let (snapshot, checked) = match start {
                Start::Fresh => {
                    let snapshot = self.snapshot();
                    if let Err(reason) = run_pre_hooks(&snapshot.pre, &mut ctx) {
                        return self.finish(ctx, engine_deny(&reason), &snapshot);
                    }
                    (snapshot, None)
                }
                Start::Prepared { engine, version, stage } => {
                    let (snapshot, now) = self.snapshot_and_version();
                    let unchanged = engine == self.inner.id && now == version;
                    match stage {
                        Stage::Refused(reason) => return self.finish(ctx, engine_deny(&reason), &snapshot),
                        Stage::Invalid(reason) => (snapshot, Some(Err(reason))),
                        Stage::Checked(mut checked) => {
                            // Guards or hooks changed since: every guard decides in turn.
                            if !unchanged {
                                checked.early.clear();
                            }
                            (snapshot, Some(Ok(checked)))
                        }
                    }
                }
            };
            let snapshot = &*snapshot;
            let clock = &self.inner.clock;
            clock.observe(ctx.caller_time());
            let now = clock.now();
            ctx.timestamp = Some(now.as_secs_f64());
            let checked = match checked {
                Some(checked) => checked.map(|Checked { function, early }| {
                    (
                        function
                            .map_or(std::borrow::Cow::Borrowed(ctx.function_name.as_str()), std::borrow::Cow::Owned),
                        early,
                    )
                }),
                None => check_call(&ctx).map(|f| (f, Vec::new())),
            };
            let (function, mut early) = match checked {
                Ok(checked) => checked,
                Err(reason) => return self.finish(ctx, engine_deny(&format!("invalid call: {reason}")), snapshot),
            };
            let hold_until = now.saturating_add(self.inner.approval_timeout);
            let call = Call::new(&ctx, &function, now, &*self.inner.store, hold_until);
            let mut slots = Vec::with_capacity(snapshot.guards.len());
            for (i, g) in snapshot.guards.iter().enumerate().filter(|(_, g)| g.enabled.load(Ordering::Relaxed)) {
                let name = g.name.clone();
                match early.get_mut(i).map(std::mem::take) {
                    Some(Early::Decided(d)) => {
                        slots.push(Slot::done(name, d));
                        continue;
                    }
                    Some(Early::Skipped) => continue,
                    Some(Early::Applies) => {
                        slots.push(Slot::running(name, g.guard.evaluate(&call)));
                        continue;
                    }
                    Some(Early::InTurn) | None => {}
                }
                match catch_unwind(AssertUnwindSafe(|| g.guard.applies(&call))) {
                    Ok(false) => {}
                    Ok(true) => slots.push(Slot::running(name, g.guard.evaluate(&call))),
                    Err(p) => {
                        let error = GuardError::Other(format!("`applies` panicked: {}", panic_message(p.as_ref())));
                        slots.push(Slot::failed(name, error));
                    }
                }
            }
            let decisions = join::run_guards(slots, self.inner.guard_timeout).await;
            let effects = call.into_effects();
            // Named in `finish_outcome` (or before it is shown to a human, in `await_approval`).
            let mut outcome = Outcome::new(String::new(), String::new(), decisions, &ctx.arguments);
            let monitor = self.mode() == Mode::Monitor;
            if monitor {
                outcome.set_enforced(false);
            }
            // A call that runs commits its effects, a denied one releases them, here; only a call
            // that waits for a human takes the (boxed: its future is large) approval path.
            let runs = monitor || matches!(outcome.decision(), DecisionKind::Allow | DecisionKind::Modify);
            if runs {
                if !effects.is_empty()
                    && let Err(e) = self.commit(&ctx.call_id, &effects, now).await
                {
                    Box::pin(self.fail_commit(&ctx, &mut outcome, &effects, &e, now)).await;
                }
            } else if outcome.decision() == DecisionKind::Deny {
                self.release(&effects, now).await;
            } else {
                Box::pin(self.await_approval(&ctx, &mut outcome, effects, now)).await;
            }
            self.finish_outcome(ctx, outcome, snapshot)
        }
    }

    /// Holds the effects of a call that needs approval while a human decides (or, with no
    /// approval handler, until `Engine::resolve_approval`), then commits or releases them.
    async fn await_approval(&self, ctx: &CallContext, outcome: &mut Outcome, effects: Vec<Effect>, now: Timestamp) {
        let Some(handler) = self.inner.approvals.clone() else {
            if let Err(e) = self.hold(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
            }
            return;
        };
        let expires = now.saturating_add(self.inner.approval_timeout);
        // The outcome is shown before `finish_outcome` names it: name it now.
        outcome.set_call(ctx.call_id.clone(), ctx.function_name.clone());
        let request = ApprovalRequest { context: ctx, outcome: &*outcome, expires_at: expires.as_secs_f64() };
        let answer = with_timeout(self.inner.approval_timeout, handler.request_approval(&request)).await;
        let answer = match answer {
            Some(Ok(a)) => a,
            Some(Err(e)) => ApprovalResponse::refuse("engine").with_reason(format!("approval failed: {e}")),
            None => ApprovalResponse::refuse("engine").with_reason("approval timed out"),
        };
        if answer.approved {
            let now = self.inner.clock.now();
            if let Err(e) = self.commit(&ctx.call_id, &effects, now).await {
                self.fail_commit(ctx, outcome, &effects, &e, now).await;
                return;
            }
            if let Some(args) = answer.arguments.clone() {
                outcome.set_modified_arguments(args);
            }
        } else {
            self.release(&effects, self.inner.clock.now()).await;
        }
        outcome.set_approved(answer.approved, answer.approver.clone());
        self.emit(|| EngineEvent::ApprovalResolved {
            call_id: ctx.call_id.clone(),
            approved: answer.approved,
            approver: answer.approver.clone(),
        });
    }

    /// The effects could not be committed or held: the call must not run.
    async fn fail_commit(
        &self,
        ctx: &CallContext,
        outcome: &mut Outcome,
        effects: &[Effect],
        e: &CommitError,
        now: Timestamp,
    ) {
        self.release(effects, now).await;
        let mut decisions = outcome.decisions().to_vec();
        decisions.push(engine_deny(&format!("fail-safe: the call's effects could not be recorded: {e}")));
        let enforced = outcome.enforced();
        *outcome = Outcome::new(String::new(), String::new(), decisions, &ctx.arguments);
        outcome.set_enforced(enforced);
    }

    async fn commit(&self, call_id: &str, effects: &[Effect], now: Timestamp) -> Result<(), CommitError> {
        let store = &self.inner.store;
        // A receipt only when costs may be settled later.
        let keep_receipt = !self.inner.settle_window.is_zero();
        let mut receipt: Vec<CounterSpec> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Reservation { id, cost } => {
                    if !store.commit(*id, now).await? {
                        return Err(CommitError::Lapsed);
                    }
                    if keep_receipt {
                        receipt.extend(cost.iter().cloned());
                    }
                }
                Effect::Record { key, value, expires_at } => {
                    store.put_record(key, Some(value), *expires_at, now).await?;
                }
            }
        }
        if !receipt.is_empty() {
            let expires_at = receipt_expiry(&receipt, now, self.inner.settle_window);
            let receipt = Receipt { expires_at, charged: receipt };
            let bytes = serde_json::to_vec(&receipt).map_err(|e| CommitError::Encode(e.to_string()))?;
            store.put_record(&receipt_key(call_id), Some(&bytes), Some(expires_at), now).await?;
        }
        Ok(())
    }

    async fn release(&self, effects: &[Effect], now: Timestamp) {
        for effect in effects {
            if let Effect::Reservation { id, .. } = effect {
                // A failed release is not retried: the reservation lapses at its hold time.
                let _ = self.inner.store.release(*id, now).await;
            }
        }
    }

    async fn hold(&self, call_id: &str, effects: &[Effect], now: Timestamp) -> Result<(), CommitError> {
        let bytes = serde_json::to_vec(effects).map_err(|e| CommitError::Encode(e.to_string()))?;
        let until = now.saturating_add(self.inner.approval_timeout);
        self.inner.store.put_record(&pending_key(call_id), Some(&bytes), Some(until), now).await?;
        Ok(())
    }

    /// Answers a held approval (one asked with no approval handler configured). Approval commits
    /// the call's reservations; refusal releases them. Single use: a second answer, or one after
    /// the approval timeout, is refused.
    ///
    /// # Errors
    /// [`ResolveError::NotPending`], [`ResolveError::Expired`], or a store error.
    pub async fn resolve_approval(&self, call_id: &str, response: &ApprovalResponse) -> Result<(), ResolveError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let key = pending_key(call_id);
        let Some(bytes) = store.get_record(&key, now).await? else {
            return Err(ResolveError::NotPending(call_id.to_owned()));
        };
        // Claim it: whoever deletes the record decides.
        if !store.swap_record(&key, Some(&bytes), None, None, now).await? {
            return Err(ResolveError::NotPending(call_id.to_owned()));
        }
        let effects: Vec<Effect> = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
        if response.approved {
            match self.commit(call_id, &effects, now).await {
                Ok(()) => {}
                Err(CommitError::Store(e)) => {
                    self.release(&effects, now).await;
                    return Err(e.into());
                }
                Err(_) => {
                    self.release(&effects, now).await;
                    return Err(ResolveError::Expired(call_id.to_owned()));
                }
            }
        } else {
            self.release(&effects, now).await;
        }
        self.emit(|| EngineEvent::ApprovalResolved {
            call_id: call_id.to_owned(),
            approved: response.approved,
            approver: response.approver.clone(),
        });
        Ok(())
    }

    /// Replaces a call's charged cost (the estimate) with its actual cost, in every window it was
    /// charged to. May be called again to correct a settlement.
    ///
    /// # Errors
    /// [`SettleError::UnknownCall`] if nothing was charged for the call, or a store error.
    pub async fn settle(&self, call_id: &str, actual: Money) -> Result<Settlement, SettleError> {
        let store = &self.inner.store;
        let key = receipt_key(call_id);
        for _ in 0..8 {
            let now = self.inner.clock.now();
            let Some(bytes) = store.get_record(&key, now).await? else {
                return Err(SettleError::UnknownCall(call_id.to_owned()));
            };
            let receipt: Receipt = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            let charged = &receipt.charged;
            // A settlement corrects the receipt; it does not extend its life.
            let updated = Receipt {
                expires_at: receipt.expires_at,
                charged: charged.iter().map(|c| CounterSpec { amount: actual.micros(), ..c.clone() }).collect(),
            };
            let new_bytes = serde_json::to_vec(&updated)
                .map_err(|e| StoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            if !store.swap_record(&key, Some(&bytes), Some(&new_bytes), Some(receipt.expires_at), now).await? {
                continue;
            }
            let deltas: Vec<CounterSpec> = charged
                .iter()
                .filter(|c| !matches!(c.window, Window::Bucket { expires_at } if expires_at <= now))
                .map(|c| CounterSpec { amount: actual.micros() - c.amount, limit: None, ..c.clone() })
                .collect();
            store.add(&deltas, now).await?;
            let settlement = Settlement {
                call_id: call_id.to_owned(),
                previous: charged.iter().map(|c| Money::from_micros(c.amount)).collect(),
                actual,
                counters: deltas.len(),
            };
            self.emit(|| EngineEvent::Settled(settlement.clone()));
            return Ok(settlement);
        }
        Err(SettleError::Conflict(call_id.to_owned()))
    }

    /// Runs [`Engine::evaluate`] to completion from synchronous code, inside or outside a Tokio
    /// runtime.
    pub fn evaluate_blocking(&self, ctx: CallContext) -> Outcome {
        let (call_id, function) = (ctx.call_id.clone(), ctx.function_name.clone());
        block_on(self.evaluate(ctx)).unwrap_or_else(|reason| {
            let deny = engine_deny(&format!("fail-safe: {reason}"));
            Outcome::new(call_id, function, vec![deny], &JsonObject::new())
        })
    }

    fn finish(&self, ctx: CallContext, decision: Decision, hooks: &Snapshot) -> Outcome {
        let mut outcome = Outcome::new(String::new(), String::new(), vec![decision], &ctx.arguments);
        if self.mode() == Mode::Monitor {
            outcome.set_enforced(false);
        }
        self.finish_outcome(ctx, outcome, hooks)
    }

    /// Names the outcome, runs the post-hooks and tells subscribers; what is left of the call
    /// comes back unless an event kept it. With neither hooks nor subscribers, the call's names
    /// move into the outcome instead of being copied.
    fn finish_outcome(&self, mut ctx: CallContext, mut outcome: Outcome, hooks: &Snapshot) -> Outcome {
        let watched = self.watched();
        if hooks.post.is_empty() && !watched {
            outcome.set_call(std::mem::take(&mut ctx.call_id), std::mem::take(&mut ctx.function_name));
            return outcome;
        }
        outcome.set_call(ctx.call_id.clone(), ctx.function_name.clone());
        for hook in &hooks.post {
            // A post-hook only observes; its panic must not change the outcome.
            let _ = catch_unwind(AssertUnwindSafe(|| hook(&ctx, &outcome)));
        }
        if watched {
            let _ = self
                .inner
                .events
                .send(EngineEvent::Evaluated { context: Arc::new(ctx), outcome: Arc::new(outcome.clone()) });
        }
        outcome
    }
}

/// Why effects could not be committed or held.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a reservation lapsed before it was committed")]
    Lapsed,
    #[error("could not encode effects: {0}")]
    Encode(String),
}

fn run_pre_hooks(hooks: &[PreHook], ctx: &mut CallContext) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| hook(ctx))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("pre-hook {i} refused the call: {e}")),
            Err(p) => {
                return Err(format!("fail-safe: pre-hook {i} panicked: {}", panic_message(p.as_ref())));
            }
        }
    }
    Ok(())
}

/// Validates the call's names; returns the normalised function name.
fn check_call(ctx: &CallContext) -> Result<std::borrow::Cow<'_, str>, String> {
    // Before any work on them: normalising a name of megabytes would take seconds.
    let limit = halt_core::context::MAX_NAME_BYTES;
    for (field, value) in [
        ("function_name", Some(&ctx.function_name)),
        ("agent_id", ctx.agent_id.as_ref()),
        ("session_id", ctx.session_id.as_ref()),
    ] {
        if value.is_some_and(|v| v.len() > limit) {
            return Err(format!("{field}: longer than {limit} bytes"));
        }
    }
    let function = names::validate(&ctx.function_name).map_err(|e| format!("function_name: {e}"))?;
    for (field, value) in [("agent_id", &ctx.agent_id), ("session_id", &ctx.session_id)] {
        if let Some(c) = value.as_deref().and_then(|v| v.chars().find(|c| c.is_control())) {
            return Err(format!("{field}: {}", names::NameError::ControlCharacter(u32::from(c))));
        }
    }
    Ok(function)
}

fn engine_deny(reason: &str) -> Decision {
    Decision::deny(reason.to_owned()).with_guard(GuardName::new(ENGINE_GUARD_NAME))
}

fn pending_key(call_id: &str) -> String {
    format!("halt/pending/{call_id}")
}

fn receipt_key(call_id: &str) -> String {
    format!("halt/receipt/{call_id}")
}

/// What a call was charged, kept for `settle` until `expires_at`.
#[derive(Serialize, Deserialize)]
struct Receipt {
    expires_at: Timestamp,
    charged: Vec<CounterSpec>,
}

/// A receipt lives for the settle window, and never longer than the longest window it charged
/// (settling a window that has ended changes nothing). Receipts are per call: keeping them longer
/// would fill a store with one per call.
fn receipt_expiry(counters: &[CounterSpec], now: Timestamp, settle_window: Duration) -> Timestamp {
    let longest = counters
        .iter()
        .map(|c| match c.window {
            Window::Bucket { expires_at } => expires_at,
            Window::Idle { idle } | Window::Streak { idle, .. } => now.saturating_add(idle),
            Window::Sliding { width } => now.saturating_add(width),
        })
        .fold(now, Timestamp::max);
    longest.min(now.saturating_add(settle_window))
}

/// Awaits `fut` for at most `timeout`; `None` on timeout. Without a Tokio timer, waits unbounded
/// (approval handlers are the caller's own code).
async fn with_timeout<F: Future>(timeout: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    // A handler that answers at once (a policy, a test, `eval`) needs no timer.
    if let std::task::Poll::Ready(out) = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await
    {
        return Some(out);
    }
    let timer_available = tokio::runtime::Handle::try_current().is_ok();
    let sleep = if timer_available { catch_unwind(|| tokio::time::sleep(timeout)).ok() } else { None };
    let Some(sleep) = sleep else {
        return Some(fut.await);
    };
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Runs a future to completion from synchronous code.
fn block_on<F: Future + Send>(fut: F) -> Result<F::Output, String>
where
    F::Output: Send,
{
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("agenthalt-blocking")
                .enable_time()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    if tokio::runtime::Handle::try_current().is_ok() {
        // Blocking a runtime thread on itself would deadlock: wait on a helper thread instead.
        std::thread::scope(|s| s.spawn(|| runtime.block_on(fut)).join())
            .map_err(|p| format!("evaluation panicked: {}", panic_message(p.as_ref())))
    } else {
        Ok(runtime.block_on(fut))
    }
}
