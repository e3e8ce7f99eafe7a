//! [`EngineBuilder`]: an engine's guards, store, clock and settings.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use halt_core::store::StateStore;
use halt_core::{CallContext, Clock, Guard, Outcome, SystemClock};
use halt_store_memory::MemoryStore;
use tokio::sync::broadcast;

use crate::approval::ApprovalHandler;
use crate::engine::{CachePadded, Engine, EngineError, HookError, Inner, Mode, Snapshot};
use crate::record::Recorder;

/// Builds an [`Engine`].
pub struct EngineBuilder {
    pub(crate) guards: Vec<Arc<dyn Guard>>,
    pub(crate) hooks: Snapshot,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) guard_timeout: Duration,
    pub(crate) approval_timeout: Duration,
    pub(crate) settle_window: Duration,
    pub(crate) mode: Mode,
    pub(crate) approvals: Option<Arc<dyn ApprovalHandler>>,
    pub(crate) recorder: Option<Arc<dyn Recorder>>,
    pub(crate) event_capacity: usize,
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
            recorder: None,
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

    /// Where every decision is reported as it is made (the audit log). A required recorder that
    /// cannot take a record makes the engine deny the call.
    #[must_use]
    pub fn recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = Some(recorder);
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
    pub(crate) fn build_empty(self) -> Engine {
        let (events, _) = broadcast::channel(self.event_capacity);
        Engine {
            inner: Arc::new(Inner {
                snapshot: CachePadded(RwLock::new(Arc::new(self.hooks))),
                clock: self.clock,
                store: self.store,
                events,
                watched: AtomicBool::new(false),
                version: CachePadded(AtomicU64::new(0)),
                id: {
                    static ENGINES: AtomicU64 = AtomicU64::new(0);
                    ENGINES.fetch_add(1, Ordering::Relaxed)
                },
                guard_timeout: self.guard_timeout,
                approval_timeout: self.approval_timeout,
                settle_window: self.settle_window,
                monitor: AtomicBool::new(self.mode == Mode::Monitor),
                approvals: self.approvals,
                recorder: self.recorder,
            }),
        }
    }
}
