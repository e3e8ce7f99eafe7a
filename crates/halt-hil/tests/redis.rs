//! Approvals shared through Redis: one process asks and waits, another process decides.
//!
//! The deciding process is this test binary again, running the ignored `decider_process` test
//! with the server's address in its environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

use std::sync::Arc;
use std::time::Duration;

use halt_core::{CallContext, Clock, Decision, StateStore, SystemClock};
use halt_engine::Engine;
use halt_hil::{ApprovalState, Broker, BrokerConfig, Filter, Verdict};
use halt_store_redis::RedisStore;
use halt_testing::guards::{ReservingGuard, StaticGuard};
use halt_testing::redis_server::RedisServer;
use serde_json::json;

const URL: &str = "HALT_HIL_DECIDER_URL";
const PREFIX: &str = "{hil-test}:";

fn config() -> BrokerConfig {
    BrokerConfig { poll_interval: Duration::from_millis(20), ..BrokerConfig::default() }
}

async fn store(url: &str) -> Arc<dyn StateStore> {
    Arc::new(RedisStore::connect(url, PREFIX).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_asks_while_another_decides() {
    let Some(server) = RedisServer::start() else { return };
    let url = server.url();
    let store = store(&url).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let broker = Broker::new(Arc::clone(&store), Arc::clone(&clock), config());
    let engine = Engine::builder()
        .store_arc(Arc::clone(&store))
        .clock_arc(clock)
        .guard(ReservingGuard::new("spend", "k", 400_000, 1_000_000))
        .guard(StaticGuard::new("ask", Decision::require_approval("a person decides")))
        .approval_handler(broker.clone())
        .build()
        .unwrap();
    let running = tokio::spawn({
        let engine = engine.clone();
        let call = CallContext::new("buy").with_arguments(json!({"qty": 3})).unwrap().with_agent("bot");
        async move { engine.evaluate(call).await }
    });

    let decider = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "decider_process", "--ignored", "--nocapture"])
        .env(URL, &url)
        .output()
        .unwrap();
    assert!(decider.status.success(), "the deciding process failed: {}", String::from_utf8_lossy(&decider.stdout));
    assert!(String::from_utf8_lossy(&decider.stdout).contains("1 passed"), "the decider did not run");

    let outcome = tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap();
    assert!(outcome.is_allowed(), "{outcome:?}");
    assert_eq!(outcome.approver(), Some("bob@other-process"));
    let spent = store.total("k", ReservingGuard::window(), SystemClock.now()).await.unwrap();
    assert_eq!(spent, 400_000, "the held reservation was committed");
    let all = broker.list(&Filter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, ApprovalState::Used);
    drop(server);
}

/// Run by [`one_process_asks_while_another_decides`] in a process of its own.
#[tokio::test]
#[ignore = "a helper: runs in the process the Redis test starts"]
async fn decider_process() {
    let Ok(url) = std::env::var(URL) else { return };
    let broker = Broker::new(store(&url).await, Arc::new(SystemClock), config());
    let filter = Filter { state: Some(ApprovalState::Pending), ..Filter::default() };
    for _ in 0..1_500 {
        if let Some(a) = broker.list(&filter).await.unwrap().pop() {
            assert_eq!(a.function, "buy");
            let decided = broker.decide(&a.id, Verdict::Approve, "bob@other-process", Some("fine")).await.unwrap();
            assert_eq!(decided.state, ApprovalState::Approved);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no approval was asked");
}
