//! Evaluating a call: pre-hooks, the applicable guards concurrently, then its effects settled
//! and its post-hooks run.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use halt_core::{Call, CallContext, Decision, DecisionKind, GuardError, GuardName, JsonObject, Outcome, names};

use crate::engine::{ENGINE_GUARD_NAME, Engine, Mode, PreHook, Snapshot};
use crate::events::EngineEvent;
use crate::join::{self, Slot, panic_message};
use crate::prepare::{Checked, Early, Stage, Start};
use crate::record::Record;

impl Engine {
    /// Evaluates a proposed call: runs the pre-hooks, the applicable guards (concurrently), then
    /// settles the call's effects and runs the post-hooks.
    ///
    /// Never fails: an invalid call, a failing hook, guard or store each give a DENY whose
    /// reason says what went wrong.
    pub fn evaluate(&self, ctx: CallContext) -> impl Future<Output = Outcome> + Send + '_ {
        self.decide(ctx, Start::Fresh)
    }

    /// Evaluates a proposed call as [`Engine::evaluate`] does, but a call that needs a human is
    /// not put to the approval handler: it is held, its reservations kept for the approval
    /// timeout, and its outcome comes back unanswered
    /// ([`Outcome::needs_approval`](halt_core::Outcome::needs_approval)). For a caller that asks
    /// its own user through its own channel (an MCP client, a chat) and then answers with
    /// [`Engine::resolve_approval`], once.
    pub fn evaluate_held(&self, ctx: CallContext) -> impl Future<Output = Outcome> + Send + '_ {
        self.decide(ctx, Start::Held)
    }

    /// Decides a call: runs its pre-hooks and checks it unless it was prepared, runs the guards,
    /// settles the effects. One future per call, made without running anything, and built as
    /// a plain function returning an `async move` block so that the call is held once in it (an
    /// `async fn` would hold its arguments twice, and this future is moved on every call).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice in a future moved on every call"
    )]
    pub(crate) fn decide(&self, mut ctx: CallContext, start: Start) -> impl Future<Output = Outcome> + Send + '_ {
        async move {
            let ask = !matches!(start, Start::Held);
            let (start, edited) = match start {
                Start::Edited(edited) => (Start::Fresh, Some(edited)),
                start => (start, None),
            };
            let (snapshot, checked) = match start {
                Start::Fresh | Start::Held | Start::Edited(_) => {
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
            let mut decisions = join::run_guards(slots, self.inner.guard_timeout).await;
            if edited.as_ref().is_some_and(|e| e.other_tool) {
                // Whatever the guards say, another tool than the one asked about needs a human.
                let ask = Decision::require_approval("an approver's edit names another tool");
                decisions.push(ask.with_guard(GuardName::new(ENGINE_GUARD_NAME)));
            }
            let effects = call.into_effects();
            // Named in `finish_outcome` (or before it is shown to a human, in `await_approval`).
            let mut outcome = Outcome::new(String::new(), String::new(), decisions, &ctx.arguments);
            let monitor = self.mode() == Mode::Monitor;
            if monitor {
                outcome.set_enforced(false);
            }
            if let Some(recorder) = &self.inner.recorder
                && recorder.record(Record::Evaluated { context: &ctx, outcome: &outcome }).is_err()
                && recorder.required()
            {
                // An action nobody can audit does not run.
                self.release(&effects, now).await;
                let mut decisions = outcome.decisions().to_vec();
                decisions.push(engine_deny("audit unavailable (fail-safe)"));
                let enforced = outcome.enforced();
                outcome = Outcome::new(String::new(), String::new(), decisions, &ctx.arguments);
                outcome.set_enforced(enforced);
                return self.finish_outcome(ctx, outcome, snapshot);
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
                Box::pin(self.await_approval(&mut ctx, &mut outcome, effects, now, edited, ask)).await;
            }
            self.finish_outcome(ctx, outcome, snapshot)
        }
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

    pub(crate) fn finish(&self, ctx: CallContext, decision: Decision, hooks: &Snapshot) -> Outcome {
        let mut outcome = Outcome::new(String::new(), String::new(), vec![decision], &ctx.arguments);
        if self.mode() == Mode::Monitor {
            outcome.set_enforced(false);
        }
        if let Some(recorder) = &self.inner.recorder {
            // Refused before any guard ran: recorded, whether or not the recorder takes it.
            let _ = recorder.record(Record::Evaluated { context: &ctx, outcome: &outcome });
        }
        self.finish_outcome(ctx, outcome, hooks)
    }

    /// Names the outcome, runs the post-hooks and tells subscribers; what is left of the call
    /// comes back unless an event kept it. With neither hooks nor subscribers, the call's names
    /// move into the outcome instead of being copied.
    pub(crate) fn finish_outcome(&self, mut ctx: CallContext, mut outcome: Outcome, hooks: &Snapshot) -> Outcome {
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

pub(crate) fn run_pre_hooks(hooks: &[PreHook], ctx: &mut CallContext) -> Result<(), String> {
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
pub(crate) fn check_call(ctx: &CallContext) -> Result<std::borrow::Cow<'_, str>, String> {
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

pub(crate) fn engine_deny(reason: &str) -> Decision {
    Decision::deny(reason.to_owned()).with_guard(GuardName::new(ENGINE_GUARD_NAME))
}

/// Runs a future to completion from synchronous code.
pub(crate) fn block_on<F: Future + Send>(fut: F) -> Result<F::Output, String>
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
