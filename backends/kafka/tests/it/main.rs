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

#[tokio::test]
async fn creating_topics_twice_is_harmless_and_reports_what_exists() {
    let config = config();
    let layout = QueueLayout::default();
    let first = mdc_kafka::create_topics(&config, &layout)
        .await
        .expect("create");
    assert_eq!(first.len(), mdc_core::ports::Topic::all().len());
    assert!(first
        .iter()
        .all(|o| matches!(o, TopicOutcome::Created { partitions: 4, .. })));
    let second = mdc_kafka::create_topics(&config, &layout)
        .await
        .expect("create again");
    assert!(
        second.iter().all(|o| matches!(
            o,
            TopicOutcome::Existed {
                partitions: 4,
                configured: 4,
                ..
            }
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
