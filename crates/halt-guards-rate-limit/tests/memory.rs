//! Memory stays bounded: a million calls with distinct sessions and function names.
//!
//! Run with `cargo test --release -p halt-guards-rate-limit --test memory -- --ignored --nocapture`;
//! it prints the peak resident memory of the process (Linux).

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a measurement, run by hand")]

use std::time::Duration;

use halt_core::{CallContext, ManualClock, Timestamp};
use halt_engine::Engine;
use halt_guards_rate_limit::{RateLimitConfig, RateLimitGuard};
use halt_store_memory::MemoryStore;
use serde_json::json;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[test]
#[ignore = "a measurement: run by hand in release mode"]
fn a_million_distinct_calls_stay_under_200_mib() {
    // Every call counts (no global cap that would deny and stop counting), so every window and
    // loop record is created: per-function minutes, per-session loop records.
    let config = RateLimitConfig { max_calls_per_minute: None, burst_threshold: None, ..RateLimitConfig::default() };
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let engine = Engine::builder()
        .guard(RateLimitGuard::new(config).unwrap())
        .store(MemoryStore::new())
        .clock(clock.clone())
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let allowed = rt.block_on(async {
        let mut allowed = 0u32;
        for i in 0..1_000_000u32 {
            // A thousand calls per second of engine time.
            clock.advance(Duration::from_millis(1));
            let ctx = CallContext::new(format!("tool_{i}"))
                .with_session(format!("session-{i}"))
                .with_agent("agent")
                .with_arguments(json!({"n": i}))
                .unwrap();
            allowed += u32::from(engine.evaluate(ctx).await.is_allowed());
        }
        allowed
    });
    let peak = peak_rss_mib();
    println!("1,000,000 distinct calls: {allowed} allowed, peak resident memory {peak:.1} MiB");
    assert_eq!(allowed, 1_000_000);
    assert!(peak < 200.0, "peak {peak:.1} MiB");
}
