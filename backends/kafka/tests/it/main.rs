//! The Kafka queue against a real broker (tansu) started by
//! scripts/test-services: the queue contract, each test on topics of its own.

use std::sync::Arc;

use mdc_core::ports::{Queue, QueueLayout};
use mdc_kafka::{KafkaConfig, KafkaQueue, TopicOutcome};

fn brokers() -> String {
    std::env::var("MDC_TEST_KAFKA_BROKERS")
        .expect("MDC_TEST_KAFKA_BROKERS is not set: run the tests with ./scripts/test")
}

/// Topics of their own: the test broker cannot delete topics one by one.
fn config() -> KafkaConfig {
    let mut config = KafkaConfig::new(&brokers(), &format!("t{}", ulid::Ulid::new()));
    config.replication_factor = 1;
    config.create_topics = true;
    config
}

async fn queue() -> Arc<dyn Queue> {
    Arc::new(
        KafkaQueue::connect(config(), QueueLayout::default())
            .await
            .expect("connect"),
    )
}

mod contract {
    use super::*;
    mdc_core::queue_contract!(queue());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_group_sees_every_record() {
    mdc_core::contract::queue::every_outcome_group_sees_every_record(
        queue().await,
        ["webhooks", "billing"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_what_is_not_finished() {
    mdc_core::contract::queue::lag_counts_what_is_not_finished(queue().await).await;
}

#[tokio::test]
async fn creating_topics_twice_is_harmless_and_reports_what_exists() {
    let config = config();
    let layout = QueueLayout::default();
    let first = mdc_kafka::create_topics(&config, &layout)
        .await
        .expect("create");
    assert_eq!(first.len(), mdc_core::ports::Topic::all().len());
    // Every topic of the default layout has 4 partitions but the parked
    // reports, which have one.
    let expected = |name: &str| {
        if name.ends_with(".responses.parked") {
            1
        } else {
            4
        }
    };
    assert!(
        first.iter().all(|o| matches!(
            o,
            TopicOutcome::Created { name, partitions } if *partitions == expected(name)
        )),
        "{first:?}"
    );
    let second = mdc_kafka::create_topics(&config, &layout)
        .await
        .expect("create again");
    assert!(
        second.iter().all(|o| matches!(
            o,
            TopicOutcome::Existed {
                name,
                partitions,
                configured,
            } if *partitions == expected(name) && *configured == expected(name)
        )),
        "{second:?}"
    );
}

#[tokio::test]
async fn connecting_without_topics_names_the_missing_ones() {
    let mut config = config();
    config.create_topics = false;
    let prefix = config.prefix.clone();
    let error = KafkaQueue::connect(config, QueueLayout::default())
        .await
        .err()
        .expect("must fail without topics")
        .to_string();
    assert!(error.contains(&format!("{prefix}.sms.critical")), "{error}");
    assert!(error.contains("mdc topics create"), "{error}");
}

#[tokio::test]
async fn an_unreachable_broker_fails_the_connect_within_the_timeout() {
    // Nothing listens on port 1.
    let mut config = KafkaConfig::new("127.0.0.1:1", "unreachable");
    config.replication_factor = 1;
    config.produce_timeout = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    let error = KafkaQueue::connect(config, QueueLayout::default())
        .await
        .err()
        .expect("nothing listens there");
    assert!(
        matches!(error, mdc_core::ports::QueueError::Unavailable(_)),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A paused lane stays paused when a rebalance hands it partitions.
#[tokio::test]
async fn a_paused_consumer_stays_paused_across_rebalances() {
    use mdc_core::ports::{ConsumerSpec, Topic};
    use mdc_core::{Channel, Priority};
    use std::time::Duration;

    let queue = queue().await;
    let topic = Topic::Messages(Channel::Email, Priority::Bulk);
    let spec = ConsumerSpec { index: 0, count: 1 };
    let a = queue.consumer(topic, spec).await.expect("a");
    assert!(a.fetch(10).await.expect("fetch").is_empty());
    let b = queue.consumer(topic, spec).await.expect("b");
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let (x, y) = tokio::join!(a.fetch(10), b.fetch(10));
        assert!(x.expect("a").is_empty() && y.expect("b").is_empty());
    }
    // A, holding half the partitions, pauses; B leaves and A is handed
    // partitions it never paused.
    a.pause().await.expect("pause");
    b.close().await.expect("close");
    drop(b);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        assert!(a.fetch(10).await.expect("a").is_empty());
    }

    for i in 0..8u8 {
        queue
            .produce(topic, &format!("user{i}@example.com"), vec![i])
            .await
            .expect("produce");
    }
    for _ in 0..4 {
        let batch = a.fetch(10).await.expect("fetch");
        assert!(batch.is_empty(), "paused, yet fetched {batch:?}");
    }
    a.resume().await.expect("resume");
    let got = mdc_core::contract::queue::fetch_n(&a, 8).await;
    assert_eq!(got.len(), 8);
}
