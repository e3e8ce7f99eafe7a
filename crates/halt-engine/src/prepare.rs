//! Preparing a call ahead of its turn: the pre-hooks, which guards apply, and the decisions of
//! the guards that decide from the call alone, done on another thread by `Engine::evaluate_stream`.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use halt_core::{Call, CallContext, Decision, Effect, Outcome};

use crate::engine::{Engine, Snapshot};
use crate::evaluate::{check_call, run_pre_hooks};

/// A call made ready by [`Engine::prepare`] (or a [`Preparer`]), for
/// [`Engine::evaluate_prepared`].
pub(crate) struct Prepared {
    pub(crate) ctx: CallContext,
    /// The engine it was prepared for, and the version of its guards and hooks then.
    pub(crate) engine: u64,
    pub(crate) version: u64,
    pub(crate) stage: Stage,
}

/// Prepares calls for an engine on one thread ([`Engine::preparer`]). It keeps the engine's
/// guards and hooks as it last saw them and looks again only when they changed, so that
/// preparing a call writes no memory that other threads write too: neither the lock over the
/// guards nor their reference count.
pub(crate) struct Preparer<'e> {
    pub(crate) engine: &'e Engine,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) version: u64,
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
pub(crate) enum Start {
    /// Nothing done yet (`Engine::evaluate`).
    Fresh,
    /// Nothing done yet, and a call that needs a human is held for `Engine::resolve_approval`
    /// rather than put to the approval handler (`Engine::evaluate_held`).
    Held,
    /// Prepared ahead for the engine `engine` at `version`.
    Prepared { engine: u64, version: u64, stage: Stage },
    /// A call as an approver edited it: evaluated afresh, and covered by that approval only as
    /// far as [`Edited`] says.
    Edited(Box<Edited>),
}

/// What an approver's edit already covers.
#[derive(Debug)]
pub(crate) struct Edited {
    /// The guards that asked for the approval; a guard not among them asks again.
    pub(crate) covered: Vec<String>,
    /// The edit names another tool: whatever the guards say, a human approves it again.
    pub(crate) other_tool: bool,
    /// Who approved the edit.
    pub(crate) approver: Option<String>,
    /// How many edits led here.
    pub(crate) depth: u8,
}

/// How far preparing a call went.
#[derive(Debug)]
pub(crate) enum Stage {
    /// A pre-hook refused it.
    Refused(String),
    /// Its names are invalid.
    Invalid(String),
    /// Checked.
    Checked(Checked),
}

/// A checked call, as `prepare` left it.
#[derive(Debug)]
pub(crate) struct Checked {
    /// Its normalised function name; `None` when that is the name as given.
    pub(crate) function: Option<String>,
    /// What each guard told ahead, by its place in the snapshot.
    pub(crate) early: Vec<Early>,
}

/// What a guard decided ahead of the call's turn.
#[derive(Debug, Default)]
pub(crate) enum Early {
    /// Nothing: it is asked in turn whether it applies, and decides.
    #[default]
    InTurn,
    /// It does not apply.
    Skipped,
    /// It applies, and decides in turn.
    Applies,
    Decided(Decision),
}

impl Engine {
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
    pub(crate) fn decide_ahead(&self, ctx: &CallContext, function: &str, snapshot: &Snapshot) -> Vec<Early> {
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
}
