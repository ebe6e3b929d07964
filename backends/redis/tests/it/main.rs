//! The Redis retry scheduler against a real redis-server started by
//! scripts/test-services: the port's contract suite, then the expiry and
//! backstop paths.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mdc_core::contract::retry::Open;
use mdc_core::ports::{RetryItem, RetryScheduler};
use mdc_core::{Channel, MessageId, Priority};
use mdc_redis::{RedisRetry, RedisRetryConfig};

fn url() -> String {
    std::env::var("MDC_TEST_REDIS_URL")
        .expect("MDC_TEST_REDIS_URL is not set: run the tests with ./scripts/test")
}

/// A key prefix of its own for each test.
fn config() -> RedisRetryConfig {
    let mut config = RedisRetryConfig::new(&url(), &format!("mdc-test-{}", ulid::Ulid::new()));
    config.in_flight_lease = Duration::from_secs(2);
    config
}

fn reopenable(config: RedisRetryConfig) -> Open {
    Arc::new(move || {
        let config = config.clone();
        Box::pin(async move {
            Arc::new(RedisRetry::connect(config).await.expect("connect")) as Arc<dyn RetryScheduler>
        })
    })
}

mod cache {
    use super::*;
    use mdc_core::ports::MessageCache;
    mdc_core::cache_contract!(async {
        let prefix = format!("mdc-test-{}", ulid::Ulid::new());
        Arc::new(
            mdc_redis::RedisCache::connect(&url(), &prefix)
                .await
                .expect("connect"),
        ) as Arc<dyn MessageCache>
    });
}

mod fleet {
    use super::*;
    use mdc_core::ports::Fleet;
    mdc_core::fleet_contract!(async {
        let prefix = format!("mdc-test-{}", ulid::Ulid::new());
        Arc::new(
            mdc_redis::RedisFleet::connect(&url(), &prefix)
                .await
                .expect("connect"),
        ) as Arc<dyn Fleet>
    });
}

mod contract {
    use super::*;
    mdc_core::retry_contract!(async { reopenable(config()) });
}

fn item_in(millis: i64) -> RetryItem {
    RetryItem {
        message_id: MessageId::generate(),
        channel: Channel::Push,
        priority: Priority::Normal,
        due: mdc_core::now() + chrono::Duration::milliseconds(millis),
    }
}

#[tokio::test]
async fn the_expired_event_fires_a_retry_long_before_the_sweep() {
    let mut config = config();
    config.sweep_interval = Duration::from_secs(30);
    // Connected means subscribed to the expired events.
    let retry = RedisRetry::connect(config).await.expect("connect");
    let item = item_in(300);
    retry.schedule(item.clone()).await.expect("schedule");
    let start = std::time::Instant::now();
    let got = retry.take_due(10).await.expect("take");
    assert_eq!(got, vec![item]);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "fired after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn with_the_subscriber_gone_the_sweep_still_fires_every_retry() {
    let mut config = config();
    config.subscribe = false;
    config.sweep_interval = Duration::from_millis(200);
    let retry = RedisRetry::connect(config).await.expect("connect");
    let items: Vec<RetryItem> = (0..20).map(|i| item_in(100 + i * 10)).collect();
    for item in &items {
        retry.schedule(item.clone()).await.expect("schedule");
    }
    let mut got = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < items.len() && std::time::Instant::now() < deadline {
        for item in retry.take_due(100).await.expect("take") {
            assert!(got.insert(item.message_id.clone()), "fired twice");
        }
    }
    assert_eq!(got.len(), items.len());
}

#[tokio::test]
async fn competing_takers_and_both_paths_fire_each_retry_once() {
    let config = config();
    let a = Arc::new(RedisRetry::connect(config.clone()).await.expect("connect"));
    let mut swept = config.clone();
    swept.subscribe = false;
    swept.sweep_interval = Duration::from_millis(50);
    let b = Arc::new(RedisRetry::connect(swept).await.expect("connect"));
    let items: Vec<RetryItem> = (0..100).map(|i| item_in(200 + (i % 10) * 20)).collect();
    for item in &items {
        a.schedule(item.clone()).await.expect("schedule");
    }
    let mut tasks = Vec::new();
    for taker in [a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                for item in taker.take_due(20).await.expect("take") {
                    taker.complete(&item).await.expect("complete");
                    got.push(item.message_id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("join"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), items.len(), "every retry fired");
    assert_eq!(all.len(), items.len(), "no retry fired twice");
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = RedisRetryConfig::new(&format!("redis://127.0.0.1:{port}"), "x");
    let result = tokio::time::timeout(Duration::from_secs(10), RedisRetry::connect(config))
        .await
        .expect("no hang");
    assert!(result.is_err());
}
