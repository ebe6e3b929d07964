//! The [`Queue`] contract.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::ports::queue::{ConsumerSpec, Delivery, Queue, QueueConsumer, Topic};
use crate::{Channel, Priority};

const SOLO: ConsumerSpec = ConsumerSpec { index: 0, count: 1 };
const SMS_NORMAL: Topic = Topic::Messages(Channel::Sms, Priority::Normal);

/// Fetches until `n` records arrived, failing after a generous deadline.
pub async fn fetch_n(consumer: &Arc<dyn QueueConsumer>, n: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} records arrived",
            got.len()
        );
        got.extend(consumer.fetch(n - got.len()).await.expect("fetch"));
    }
    got
}

pub async fn produced_records_are_fetched_with_key_and_payload(queue: Arc<dyn Queue>) {
    let consumer = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    queue
        .produce(SMS_NORMAL, "+14155550100", b"hello".to_vec())
        .await
        .expect("produce");
    let got = fetch_n(&consumer, 1).await;
    assert_eq!(got[0].key, "+14155550100");
    assert_eq!(got[0].payload, b"hello");
    assert_eq!(got[0].topic, SMS_NORMAL);
    consumer.ack(&got[0]).await.expect("ack");
}

/// Fetches until a fetch comes back empty.
pub async fn fetch_until_idle(consumer: &Arc<dyn QueueConsumer>) -> Vec<Delivery> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let batch = consumer.fetch(100).await.expect("fetch");
        if batch.is_empty() && !got.is_empty() {
            break;
        }
        got.extend(batch);
    }
    got
}

/// At-least-once: whatever was not acknowledged comes back. (An
/// acknowledged record may come back too when it sits behind an
/// unacknowledged one in its partition; the dispatcher's claim absorbs it.)
pub async fn unacknowledged_records_are_redelivered_to_a_new_member(queue: Arc<dyn Queue>) {
    for i in 0..4u8 {
        queue
            .produce(SMS_NORMAL, &format!("k{i}"), vec![i])
            .await
            .expect("produce");
    }
    let first = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    let got = fetch_n(&first, 4).await;
    for delivery in got.iter().filter(|d| d.payload[0] % 2 == 0) {
        first.ack(delivery).await.expect("ack");
    }
    first.close().await.expect("close");
    drop(first);
    let second = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    let again: HashSet<u8> = fetch_until_idle(&second)
        .await
        .iter()
        .map(|d| d.payload[0])
        .collect();
    assert!(
        again.contains(&1) && again.contains(&3),
        "redelivered {again:?}"
    );
}

pub async fn acknowledged_records_are_not_redelivered(queue: Arc<dyn Queue>) {
    for i in 0..6u8 {
        queue
            .produce(SMS_NORMAL, &format!("k{i}"), vec![i])
            .await
            .expect("produce");
    }
    let first = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    let got = fetch_n(&first, 6).await;
    // Out of order: the later records first.
    for delivery in got.iter().rev() {
        first.ack(delivery).await.expect("ack");
    }
    first.close().await.expect("close");
    drop(first);
    queue
        .produce(SMS_NORMAL, "k-last", vec![99])
        .await
        .expect("produce");
    let second = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    let again: Vec<u8> = fetch_until_idle(&second)
        .await
        .iter()
        .map(|d| d.payload[0])
        .collect();
    assert_eq!(again, vec![99]);
}

/// A lane's lag: produced records its group has not finished. Not in the
/// suite (backends that cannot tell answer None); backends call it.
pub async fn lag_counts_what_is_not_finished(queue: Arc<dyn Queue>) {
    for i in 0..5u8 {
        queue
            .produce(SMS_NORMAL, &format!("k{i}"), vec![i])
            .await
            .expect("produce");
    }
    assert_eq!(queue.lag(SMS_NORMAL).await.expect("lag"), Some(5));
    let consumer = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    let got = fetch_n(&consumer, 5).await;
    for delivery in &got {
        consumer.ack(delivery).await.expect("ack");
    }
    // Acknowledgements become durable on close (or the next commit).
    consumer.close().await.expect("close");
    assert_eq!(queue.lag(SMS_NORMAL).await.expect("lag"), Some(0));
}

pub async fn a_paused_consumer_fetches_nothing_until_resumed(queue: Arc<dyn Queue>) {
    let consumer = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    queue
        .produce(SMS_NORMAL, "k", b"first".to_vec())
        .await
        .expect("produce");
    let got = fetch_n(&consumer, 1).await;
    consumer.ack(&got[0]).await.expect("ack");
    consumer.pause().await.expect("pause");
    for i in 0..3u8 {
        queue
            .produce(SMS_NORMAL, &format!("k{i}"), vec![i])
            .await
            .expect("produce");
    }
    for _ in 0..3 {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.fetch(10))
            .await
            .expect("a paused fetch must return")
            .expect("fetch");
        assert!(batch.is_empty(), "paused consumer fetched {batch:?}");
    }
    consumer.resume().await.expect("resume");
    let got = fetch_n(&consumer, 3).await;
    let mut payloads: Vec<u8> = got.iter().map(|d| d.payload[0]).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, vec![0, 1, 2]);
}

/// A caller may give up on a fetch (a timeout, a shutdown): nothing the
/// abandoned fetch took is lost to the consumer.
pub async fn an_abandoned_fetch_loses_nothing(queue: Arc<dyn Queue>) {
    let consumer = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    // Let the consumer settle into its group first.
    let _ = consumer.fetch(1).await.expect("fetch");
    for i in 0..20u8 {
        queue
            .produce(SMS_NORMAL, &format!("k{i}"), vec![i])
            .await
            .expect("produce");
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(1), consumer.fetch(3)).await {
            got.extend(batch.expect("fetch"));
        }
    }
    let rest = 20 - got.len();
    got.extend(fetch_n(&consumer, rest).await);
    let mut payloads: Vec<u8> = got.iter().map(|d| d.payload[0]).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, (0..20).collect::<Vec<u8>>());
}

pub async fn records_with_one_key_keep_their_order(queue: Arc<dyn Queue>) {
    let consumer = queue.consumer(SMS_NORMAL, SOLO).await.expect("consumer");
    for i in 0..50u8 {
        let key = if i % 2 == 0 { "a" } else { "b" };
        queue
            .produce(SMS_NORMAL, key, vec![i])
            .await
            .expect("produce");
    }
    let got = fetch_n(&consumer, 50).await;
    for key in ["a", "b"] {
        let seq: Vec<u8> = got
            .iter()
            .filter(|d| d.key == key)
            .map(|d| d.payload[0])
            .collect();
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        assert_eq!(seq, sorted, "order of key {key}");
        assert_eq!(seq.len(), 25);
    }
}

pub async fn group_members_share_the_records_exactly_once(queue: Arc<dyn Queue>) {
    let a = queue
        .consumer(SMS_NORMAL, ConsumerSpec { index: 0, count: 2 })
        .await
        .expect("a");
    let b = queue
        .consumer(SMS_NORMAL, ConsumerSpec { index: 1, count: 2 })
        .await
        .expect("b");
    for i in 0..40u8 {
        queue
            .produce(SMS_NORMAL, &format!("recipient-{i}"), vec![i])
            .await
            .expect("produce");
    }
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 40 && tokio::time::Instant::now() < deadline {
        for consumer in [&a, &b] {
            let batch = tokio::time::timeout(Duration::from_millis(300), consumer.fetch(40)).await;
            for delivery in batch.unwrap_or(Ok(Vec::new())).expect("fetch") {
                *seen.entry(delivery.payload[0]).or_insert(0) += 1;
                consumer.ack(&delivery).await.expect("ack");
            }
        }
    }
    assert_eq!(seen.len(), 40);
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
}

pub async fn topics_are_isolated(queue: Arc<dyn Queue>) {
    let bulk_topic = Topic::Messages(Channel::Sms, Priority::Bulk);
    let bulk = queue.consumer(bulk_topic, SOLO).await.expect("consumer");
    let responses = queue
        .consumer(Topic::Responses, SOLO)
        .await
        .expect("consumer");
    queue
        .produce(SMS_NORMAL, "k", b"normal".to_vec())
        .await
        .expect("produce");
    queue
        .produce(Topic::Responses, "k", b"report".to_vec())
        .await
        .expect("produce");
    let got = fetch_n(&responses, 1).await;
    assert_eq!(got[0].payload, b"report");
    let nothing = tokio::time::timeout(Duration::from_millis(500), bulk.fetch(10)).await;
    let leaked: HashSet<Vec<u8>> = nothing
        .unwrap_or(Ok(Vec::new()))
        .expect("fetch")
        .into_iter()
        .map(|d| d.payload)
        .collect();
    assert!(leaked.is_empty(), "bulk consumer saw {leaked:?}");
}

pub async fn fetch_returns_when_idle(queue: Arc<dyn Queue>) {
    let consumer = queue
        .consumer(Topic::Messages(Channel::Push, Priority::Critical), SOLO)
        .await
        .expect("consumer");
    let result = tokio::time::timeout(Duration::from_secs(10), consumer.fetch(10)).await;
    let batch = result
        .expect("fetch must return an empty batch when idle")
        .expect("fetch");
    assert!(batch.is_empty());
}

/// Expands to one test per case of the queue contract. `$make` is an
/// expression yielding a future of a fresh, empty `Arc<dyn Queue>`.
#[macro_export]
macro_rules! queue_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            queue,
            $make,
            [
                produced_records_are_fetched_with_key_and_payload,
                unacknowledged_records_are_redelivered_to_a_new_member,
                acknowledged_records_are_not_redelivered,
                a_paused_consumer_fetches_nothing_until_resumed,
                records_with_one_key_keep_their_order,
                an_abandoned_fetch_loses_nothing,
                group_members_share_the_records_exactly_once,
                topics_are_isolated,
                fetch_returns_when_idle,
            ]
        );
    };
}

/// Each of `groups` (consumer groups of the outcomes topic, joined before
/// anything is produced) sees every record, in order per key, and one
/// group's acknowledgements do not take records from another.
pub async fn every_outcome_group_sees_every_record(queue: Arc<dyn Queue>, groups: [&str; 2]) {
    let mut consumers = Vec::new();
    for group in groups {
        consumers.push(
            queue
                .group_consumer(Topic::Outcomes, group, SOLO)
                .await
                .expect("group consumer"),
        );
    }
    let keys = ["msg_a", "msg_b", "msg_c"];
    for n in 0..5 {
        for key in keys {
            queue
                .produce(Topic::Outcomes, key, format!("{key}:{n}").into_bytes())
                .await
                .expect("produce");
        }
    }
    for consumer in &consumers {
        let got = fetch_n(consumer, 15).await;
        for key in keys {
            let in_order: Vec<String> = got
                .iter()
                .filter(|d| d.key == key)
                .map(|d| String::from_utf8(d.payload.clone()).expect("utf-8"))
                .collect();
            let expected: Vec<String> = (0..5).map(|n| format!("{key}:{n}")).collect();
            assert_eq!(in_order, expected, "records of {key} in order");
        }
        // Acknowledged by the first group only: the second still gets all.
        if Arc::ptr_eq(consumer, &consumers[0]) {
            for delivery in &got {
                consumer.ack(delivery).await.expect("ack");
            }
        }
    }
}
