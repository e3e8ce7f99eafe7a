//! The Redis store against a real `redis-server` on a free loopback port: the conformance suite,
//! an outage (fail-safe denials, then recovery), and four processes sharing one budget.
//!
//! Under `CI=true` a missing `redis-server` fails these tests; elsewhere they say so and skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test code"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use halt_core::store::{CounterSpec, ReserveRequest, Window};
use halt_core::{CallContext, StateStore, StoreError, Timestamp};
use halt_engine::Engine;
use halt_store_redis::RedisStore;
use halt_testing::guards::ReservingGuard;
use halt_testing::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let Some(server) = RedisServer::start() else { return };
    let url = server.url();
    let n = AtomicU32::new(0);
    halt_testing::store_conformance::run(|| {
        let prefix = format!("{{test{}}}:", n.fetch_add(1, Ordering::SeqCst));
        let url = url.clone();
        async move { Arc::new(RedisStore::connect(&url, &prefix).await.unwrap()) as Arc<dyn StateStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_denies_fail_safe_and_recovers() {
    let Some(mut server) = RedisServer::start() else { return };
    let store = RedisStore::connect(&server.url(), "{outage}:").await.unwrap();
    let engine = Engine::builder().guard(ReservingGuard::new("spend", "k", 1, 1_000)).store(store).build().unwrap();
    assert!(engine.evaluate(CallContext::new("f")).await.is_allowed());
    server.stop();
    let o = engine.evaluate(CallContext::new("f")).await;
    assert!(o.is_denied(), "Redis down must deny, never allow");
    assert!(o.denial_reasons()[0].contains("fail-safe"), "{:?}", o.denial_reasons());
    server.launch();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if engine.evaluate(CallContext::new("f")).await.is_allowed() {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn oversized_amounts_are_refused() {
    let Some(server) = RedisServer::start() else { return };
    let store = RedisStore::connect(&server.url(), "{big}:").await.unwrap();
    let now = Timestamp::from_secs(1);
    let req = ReserveRequest {
        counters: vec![CounterSpec::new("k", Window::Idle { idle: Duration::from_secs(60) }, 1 << 60, None)],
        now,
        hold_until: now,
    };
    assert!(matches!(store.reserve(&req).await, Err(StoreError::InvalidRequest(_))));
}

/// One of the four processes of the scale-out test: 250 concurrent evaluations of 0.01 against a
/// daily 1.00 on the shared Redis; prints how many were allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "spawned by four_processes_share_one_budget"]
async fn scale_child() {
    let Ok(url) = std::env::var("HALT_REDIS_URL") else { return };
    let store = RedisStore::connect(&url, "{scale}:").await.unwrap();
    let engine =
        Engine::builder().guard(ReservingGuard::new("spend", "daily", 10_000, 1_000_000)).store(store).build().unwrap();
    let allowed = halt_testing::guards::count_allowed_concurrently(&engine, 250, |i| {
        CallContext::new("llm").with_call_id(format!("{}-{i}", std::process::id()))
    })
    .await;
    println!("allowed {allowed}");
}

#[test]
fn four_processes_share_one_budget() {
    let Some(server) = RedisServer::start() else { return };
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "scale_child", "--ignored", "--nocapture", "--test-threads", "1"])
                .env("HALT_REDIS_URL", server.url())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for mut child in children {
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines().map_while(Result::ok) {
            // The test harness may print its own text before ours on the same line.
            if let Some(n) = line.split("allowed ").nth(1) {
                total += n.trim().parse::<u32>().unwrap();
            }
        }
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(total, 100, "1,000 reserves of 0.01 across four processes against 1.00");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let spent = rt.block_on(async {
        let store = RedisStore::connect(&server.url(), "{scale}:").await.unwrap();
        store.total("daily", ReservingGuard::window(), halt_core::Clock::now(&halt_core::SystemClock)).await.unwrap()
    });
    assert_eq!(spent, 1_000_000);
}
