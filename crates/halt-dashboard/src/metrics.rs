//! What the server counts: evaluations by decision and by guard, latency, errors. Kept for the
//! life of the process (a reload keeps them), read by `/v1/stats`, `/v1/guards` and `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use halt_core::{DecisionKind, Outcome};

/// Every kind of decision, in the order counts are kept.
pub(crate) const KINDS: [DecisionKind; 4] =
    [DecisionKind::Allow, DecisionKind::Modify, DecisionKind::RequireApproval, DecisionKind::Deny];

fn index(kind: DecisionKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1)
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0];

/// The server's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    by_decision: [AtomicU64; 4],
    /// Risk scores added up, in millionths.
    risk_micros: AtomicU64,
    by_guard: Mutex<BTreeMap<String, [u64; 4]>>,
    /// Evaluations per latency bucket (the last one past every bound).
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_nanos: AtomicU64,
    /// Store operations of the server's own that failed (approvals, settle, readiness).
    pub(crate) store_errors: AtomicU64,
    /// Decisions that failed safe (a guard erred, panicked or timed out; the store or the audit
    /// could not be written).
    fail_safe: AtomicU64,
    /// Requests refused (4xx) and failed (5xx).
    pub(crate) refused: AtomicU64,
}

/// A snapshot of the counts, as `/v1/stats` shows them.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Counts {
    /// Calls evaluated by this process since it started.
    pub(crate) evaluations: u64,
    /// By final decision: `allow`, `modify`, `require_approval`, `deny`.
    pub(crate) by_decision: BTreeMap<String, u64>,
    /// By guard, then by that guard's decision.
    pub(crate) by_guard: BTreeMap<String, BTreeMap<String, u64>>,
    /// The mean of each call's highest risk score (0 with no calls).
    pub(crate) average_risk: f64,
    /// Decisions that failed safe.
    pub(crate) fail_safe: u64,
}

impl Metrics {
    /// Counts one evaluation that took `took`.
    pub(crate) fn record(&self, outcome: &Outcome, took: Duration) {
        self.by_decision[index(outcome.decision())].fetch_add(1, Ordering::Relaxed);
        // Risk scores are in [0, 1]: in millionths they fit.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a score in [0, 1]")]
        let risk = (outcome.max_risk_score().clamp(0.0, 1.0) * 1e6) as u64;
        self.risk_micros.fetch_add(risk, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if outcome.decisions().iter().any(|d| d.reason().contains("fail-safe")) {
            self.fail_safe.fetch_add(1, Ordering::Relaxed);
        }
        let mut guards = self.by_guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for d in outcome.decisions() {
            match guards.get_mut(d.guard()) {
                Some(counts) => counts[index(d.kind())] += 1,
                None => {
                    let mut counts = [0; 4];
                    counts[index(d.kind())] = 1;
                    guards.insert(d.guard().to_owned(), counts);
                }
            }
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let by_decision: Vec<u64> = self.by_decision.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let evaluations: u64 = by_decision.iter().sum();
        let named = |counts: &[u64]| -> BTreeMap<String, u64> {
            KINDS.iter().zip(counts).map(|(k, n)| (k.as_str().to_owned(), *n)).collect()
        };
        let guards = self.by_guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        #[allow(clippy::cast_precision_loss, reason = "an average for display")]
        let average_risk = if evaluations == 0 {
            0.0
        } else {
            self.risk_micros.load(Ordering::Relaxed) as f64 / 1e6 / evaluations as f64
        };
        Counts {
            evaluations,
            by_decision: named(&by_decision),
            by_guard: guards.iter().map(|(g, c)| (g.clone(), named(c))).collect(),
            average_risk,
            fail_safe: self.fail_safe.load(Ordering::Relaxed),
        }
    }

    /// The counters in Prometheus' text format; `pending` approvals and `audit_dropped` entries
    /// are read by the caller.
    pub(crate) fn prometheus(&self, pending: Option<usize>, audit_dropped: u64) -> String {
        let c = self.counts();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(&mut out, "agenthalt_evaluations_total", "counter", "Calls evaluated, by final decision.");
        for (decision, n) in &c.by_decision {
            let _ = writeln!(out, "agenthalt_evaluations_total{{decision=\"{decision}\"}} {n}");
        }
        family(&mut out, "agenthalt_guard_decisions_total", "counter", "Decisions of each guard, by kind.");
        for (guard, counts) in &c.by_guard {
            for (decision, n) in counts {
                let _ = writeln!(
                    out,
                    "agenthalt_guard_decisions_total{{guard=\"{}\",decision=\"{decision}\"}} {n}",
                    label(guard)
                );
            }
        }
        family(&mut out, "agenthalt_evaluation_duration_seconds", "histogram", "Time to evaluate a call.");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "agenthalt_evaluation_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "agenthalt_evaluation_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        #[allow(clippy::cast_precision_loss, reason = "seconds for display")]
        let sum = self.latency_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "agenthalt_evaluation_duration_seconds_sum {sum}");
        let _ = writeln!(out, "agenthalt_evaluation_duration_seconds_count {cumulative}");
        let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        };
        if let Some(pending) = pending {
            gauge("agenthalt_approvals_pending", "gauge", "Approvals waiting for a decision.", pending.to_string());
        }
        gauge(
            "agenthalt_store_errors_total",
            "counter",
            "Store operations of the server that failed.",
            self.store_errors.load(Ordering::Relaxed).to_string(),
        );
        gauge("agenthalt_fail_safe_total", "counter", "Calls denied fail-safe.", c.fail_safe.to_string());
        gauge("agenthalt_audit_dropped_total", "counter", "Audit entries dropped.", audit_dropped.to_string());
        gauge(
            "agenthalt_requests_refused_total",
            "counter",
            "Requests answered with an error.",
            self.refused.load(Ordering::Relaxed).to_string(),
        );
        out
    }
}

/// A label value escaped as Prometheus' text format wants.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;
    use halt_core::{Decision, GuardName, JsonObject};

    #[test]
    fn counts_and_the_histogram_add_up() {
        let m = Metrics::default();
        let deny = Decision::deny("no").with_guard(GuardName::new("sc\"ope"));
        let allow = Decision::allow("ok").with_guard(GuardName::new("budget"));
        let o = Outcome::new("c".into(), "f".into(), vec![allow, deny], &JsonObject::new());
        m.record(&o, Duration::from_micros(80));
        m.record(&o, Duration::from_secs(20));
        let c = m.counts();
        assert_eq!((c.evaluations, c.by_decision["deny"], c.by_guard["budget"]["allow"]), (2, 2, 2));
        assert!((c.average_risk - 1.0).abs() < 1e-9);
        let text = m.prometheus(Some(3), 7);
        assert!(text.contains("agenthalt_evaluation_duration_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("agenthalt_evaluation_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("guard=\"sc\\\"ope\""), "labels are escaped");
        assert!(text.contains("agenthalt_approvals_pending 3\n") && text.contains("agenthalt_audit_dropped_total 7\n"));
    }
}
