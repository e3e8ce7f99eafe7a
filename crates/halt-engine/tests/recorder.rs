//! The engine's recorder: every decision reported before its effects settle, and a required
//! recorder that cannot record refusing the call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::{Arc, Mutex};

use halt_core::{CallContext, Decision, Money};
use halt_engine::{ApprovalResponse, Engine, Record, RecordError, Recorder};
use halt_testing::guards::{ReservingGuard, StaticGuard};

#[derive(Debug, Default)]
struct Log {
    seen: Mutex<Vec<String>>,
    fail: bool,
    required: bool,
}

impl Recorder for Log {
    fn record(&self, record: Record<'_>) -> Result<(), RecordError> {
        let line = match record {
            Record::Evaluated { context, outcome } => format!("evaluated {} {:?}", context.call_id, outcome.decision()),
            Record::ApprovalRequested { context, .. } => format!("asked {}", context.call_id),
            Record::ApprovalResolved { call_id, response, .. } => format!("resolved {call_id} {}", response.approved),
            Record::Settled(s) => format!("settled {} {}", s.call_id, s.actual),
            _ => "other".into(),
        };
        if self.fail {
            return Err(RecordError("the disk is full".into()));
        }
        self.seen.lock().unwrap().push(line);
        Ok(())
    }

    fn required(&self) -> bool {
        self.required
    }
}

fn spent(engine: &Engine) -> i64 {
    let store = Arc::clone(engine.store());
    let now = engine.clock().now();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async move { store.total("k", ReservingGuard::window(), now).await.unwrap() })
}

#[test]
fn every_decision_is_reported() {
    let log = Arc::new(Log::default());
    let engine = Engine::builder()
        .guard(ReservingGuard::new("spend", "k", 100_000, 1_000_000))
        .guard(StaticGuard::new("ask", Decision::require_approval("ask")).only_for("buy"))
        .recorder(Arc::clone(&log) as Arc<dyn Recorder>)
        .build()
        .unwrap();
    assert!(engine.evaluate_blocking(CallContext::new("read").with_call_id("a")).is_allowed());
    assert!(engine.evaluate_blocking(CallContext::new("buy").with_call_id("b")).needs_approval());
    assert!(engine.evaluate_blocking(CallContext::new("\u{0}").with_call_id("c")).is_denied());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(engine.resolve_approval("b", &ApprovalResponse::refuse("alice"))).unwrap();
    rt.block_on(engine.settle("a", Money::from_micros(50_000))).unwrap();
    assert_eq!(
        *log.seen.lock().unwrap(),
        [
            "evaluated a Allow",
            "evaluated b RequireApproval",
            "asked b",
            "evaluated c Deny",
            "resolved b false",
            "settled a 0.05",
        ]
    );
}

#[test]
fn a_required_recorder_that_cannot_record_refuses_the_call() {
    for (required, allowed) in [(true, false), (false, true)] {
        let log = Arc::new(Log { fail: true, required, ..Log::default() });
        let engine = Engine::builder()
            .guard(ReservingGuard::new("spend", "k", 100_000, 1_000_000))
            .recorder(Arc::clone(&log) as Arc<dyn Recorder>)
            .build()
            .unwrap();
        let o = engine.evaluate_blocking(CallContext::new("read"));
        assert_eq!(o.is_allowed(), allowed, "{o:?}");
        if required {
            assert_eq!(o.denial_reasons(), ["audit unavailable (fail-safe)"]);
            assert_eq!(spent(&engine), 0, "an unrecorded call spends nothing");
        } else {
            assert_eq!(spent(&engine), 100_000);
        }
    }
}
