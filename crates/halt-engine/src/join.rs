//! Runs the applicable guards concurrently on the calling task, catching panics and enforcing
//! one deadline for all of them. No thread hop, no spawn: most guards finish on their first poll,
//! and then no timer is ever made.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;

use halt_core::{Decision, GuardError, GuardName};

/// A guard's evaluation in flight.
pub(crate) type GuardFuture<'a> = Pin<Box<dyn Future<Output = Result<Decision, GuardError>> + Send + 'a>>;

/// Why a guard gave no decision.
#[derive(Debug)]
enum Failure {
    Error(GuardError),
    Panic(String),
    TimedOut(Duration),
    NoTimer,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(e) => write!(f, "returned an error: {e}"),
            Self::Panic(msg) => write!(f, "panicked: {msg}"),
            Self::TimedOut(d) => write!(f, "did not decide within {} ms", d.as_millis()),
            Self::NoTimer => f.write_str("was still pending and no Tokio timer is available to bound it"),
        }
    }
}

enum State<'a> {
    Running(GuardFuture<'a>),
    Done(Decision),
}

/// One guard's slot: its name and its evaluation or decision.
pub(crate) struct Slot<'a> {
    guard: GuardName,
    state: State<'a>,
}

impl<'a> Slot<'a> {
    /// A guard's evaluation in flight.
    pub(crate) fn running(guard: GuardName, future: GuardFuture<'a>) -> Self {
        Self { guard, state: State::Running(future) }
    }

    /// A guard that failed before it could be evaluated (its `applies` panicked).
    pub(crate) fn done(guard: GuardName, decision: Decision) -> Self {
        Self { guard, state: State::Done(decision) }
    }

    pub(crate) fn failed(guard: GuardName, error: GuardError) -> Self {
        let decision = fail_safe(&guard, &Failure::Error(error));
        Self { guard, state: State::Done(decision) }
    }
}

struct JoinGuards<'a> {
    slots: Vec<Slot<'a>>,
    running: usize,
}

impl Future for JoinGuards<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        for slot in &mut this.slots {
            let State::Running(fut) = &mut slot.state else { continue };
            let decision = match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(Ok(d))) => d,
                Ok(Poll::Ready(Err(e))) => fail_safe(&slot.guard, &Failure::Error(e)),
                Err(payload) => fail_safe(&slot.guard, &Failure::Panic(panic_message(payload.as_ref()))),
            };
            // Dropping a panicked future may panic again; contain that too.
            let old = std::mem::replace(&mut slot.state, State::Done(decision));
            let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
            this.running -= 1;
        }
        if this.running == 0 { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

fn fail_safe(guard: &str, failure: &Failure) -> Decision {
    Decision::deny(format!("fail-safe: guard `{guard}` {failure}")).with_details(json!({"fail_safe": true}))
}

/// Polls every guard until all have decided or `timeout` passes; returns each guard's decision
/// (a fail-safe DENY for one that failed or ran out of time), named, in order.
pub(crate) async fn run_guards(slots: Vec<Slot<'_>>, timeout: Duration) -> Vec<Decision> {
    let running = slots.iter().filter(|s| matches!(s.state, State::Running(_))).count();
    let mut join = JoinGuards { slots, running };
    let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut join).poll(cx))).await;
    if first.is_ready() {
        return finish(join, None);
    }
    // Some guard is waiting on I/O: bound it. Boxed, so the common path stays small.
    Box::pin(wait_with_deadline(join, timeout)).await
}

async fn wait_with_deadline(mut join: JoinGuards<'_>, timeout: Duration) -> Vec<Decision> {
    // A Tokio runtime without its time driver panics when a timer is made: treat that, and the
    // absence of a runtime, as "no timer" and fail closed.
    let sleep =
        tokio::runtime::Handle::try_current().ok().and_then(|_| catch_unwind(|| tokio::time::sleep(timeout)).ok());
    let Some(sleep) = sleep else { return finish(join, None) };
    let mut sleep = std::pin::pin!(sleep);
    poll_fn(|cx| if Pin::new(&mut join).poll(cx).is_ready() { Poll::Ready(()) } else { sleep.as_mut().poll(cx) }).await;
    finish(join, Some(timeout))
}

/// Collects the decisions; a guard still running failed by timing out after `timeout`, or for
/// want of a timer when `timeout` is `None`.
fn finish(join: JoinGuards<'_>, timeout: Option<Duration>) -> Vec<Decision> {
    join.slots
        .into_iter()
        .map(|slot| {
            let decision = match slot.state {
                State::Done(d) => d,
                State::Running(fut) => {
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
                    fail_safe(&slot.guard, &timeout.map_or(Failure::NoTimer, Failure::TimedOut))
                }
            };
            decision.with_guard(slot.guard)
        })
        .collect()
}
