//! The embedded backends against the port contract suites.

use std::sync::Arc;

use mdc_core::contract::retry::Open;
use mdc_core::ports::{Queue, RetryScheduler, Store};
use mdc_embedded::{Db, Embedded, EmbeddedRetry, QueueLayout};

fn fresh() -> Embedded {
    let dir = tempfile::tempdir().expect("tempdir");
    // The open file outlives the directory entry; nothing else needs the path.
    Embedded::open(dir.path(), QueueLayout::default()).expect("open")
}

mod store {
    use super::*;
    mdc_core::store_contract!(async { fresh().store as Arc<dyn Store> });
}

mod cache {
    use super::*;
    use mdc_core::ports::MessageCache;
    mdc_core::cache_contract!(async {
        Arc::new(mdc_embedded::MemoryCache::default()) as Arc<dyn MessageCache>
    });
}

mod devices {
    use super::*;
    use mdc_core::ports::DeviceRegistry;
    mdc_core::devices_contract!(async { fresh().devices as Arc<dyn DeviceRegistry> });
}

mod suppression {
    use super::*;
    use mdc_core::ports::SuppressionList;
    mdc_core::suppression_contract!(async { fresh().suppressions as Arc<dyn SuppressionList> });
}

mod keys {
    use super::*;
    use mdc_core::ports::ApiKeys;
    mdc_core::keys_contract!(async { fresh().keys as Arc<dyn ApiKeys> });
}

mod checkpoint {
    use super::*;
    use mdc_core::ports::Checkpoints;
    mdc_core::checkpoint_contract!(async { fresh().checkpoints as Arc<dyn Checkpoints> });
}

mod webhooks {
    use super::*;
    use mdc_core::ports::Webhooks;
    mdc_core::webhooks_contract!(async { fresh().webhooks as Arc<dyn Webhooks> });
}

mod memory_keys {
    use super::*;
    use mdc_core::ports::ApiKeys;
    mdc_core::keys_contract!(async {
        Arc::new(mdc_core::memory::MemoryKeys::default()) as Arc<dyn ApiKeys>
    });
}

mod memory_checkpoint {
    use super::*;
    use mdc_core::ports::Checkpoints;
    mdc_core::checkpoint_contract!(async {
        Arc::new(mdc_core::memory::MemoryCheckpoints::default()) as Arc<dyn Checkpoints>
    });
}

mod memory_suppression {
    use super::*;
    use mdc_core::ports::SuppressionList;
    mdc_core::suppression_contract!(async {
        Arc::new(mdc_core::memory::MemorySuppressions::default()) as Arc<dyn SuppressionList>
    });
}

mod queue {
    use super::*;
    mdc_core::queue_contract!(async { fresh().queue as Arc<dyn Queue> });

    #[tokio::test]
    async fn every_outcome_group_sees_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = QueueLayout {
            outcome_groups: vec!["webhooks".into(), "billing".into()],
            ..QueueLayout::default()
        };
        let queue = Embedded::open(dir.path(), layout).expect("open").queue;
        mdc_core::contract::queue::every_outcome_group_sees_every_record(
            queue.clone(),
            ["webhooks", "billing"],
        )
        .await;
        assert!(
            queue
                .group_consumer(
                    mdc_core::ports::Topic::Outcomes,
                    "unknown",
                    mdc_core::ports::ConsumerSpec { index: 0, count: 1 }
                )
                .await
                .is_err(),
            "a group the layout does not keep records for is refused"
        );
    }
}

mod retry {
    use super::*;

    fn reopenable() -> Open {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Arc::new(move || {
            let path = dir.path().join("store.redb");
            Box::pin(async move {
                let db = Db::open(&path).expect("open");
                Arc::new(EmbeddedRetry::open(db).expect("retry")) as Arc<dyn RetryScheduler>
            })
        })
    }

    mdc_core::retry_contract!(async { reopenable() });
}

mod durability {
    use super::*;
    use mdc_core::contract::queue::fetch_n;
    use mdc_core::ports::{ConsumerSpec, Topic};
    use mdc_core::{Channel, Priority};

    #[tokio::test]
    async fn records_and_messages_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::Messages(Channel::Email, Priority::Bulk);
        let message = mdc_core::contract::sample_message("+14155550123");
        {
            let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
            embedded
                .queue
                .produce(topic, "k", b"kept".to_vec())
                .await
                .expect("produce");
            let record = mdc_core::MessageRecord::new(
                message.clone(),
                mdc_core::Status::Queued,
                mdc_core::Event::new("test", "queued"),
            );
            embedded.store.create(&record).await.expect("create");
        }
        let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("reopen");
        let consumer = embedded
            .queue
            .consumer(topic, ConsumerSpec { index: 0, count: 1 })
            .await
            .expect("consumer");
        assert_eq!(fetch_n(&consumer, 1).await[0].payload, b"kept");
        let got = embedded
            .store
            .get(&message.id)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(got.message, message);
        // A second process on the same directory is refused rather than corrupting it.
        assert!(Embedded::open(dir.path(), QueueLayout::default()).is_err());
    }

    #[tokio::test]
    async fn shrinking_a_topic_with_records_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::Messages(Channel::Sms, Priority::Critical);
        {
            let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
            for i in 0..32 {
                embedded
                    .queue
                    .produce(topic, &format!("key-{i}"), vec![1])
                    .await
                    .expect("produce");
            }
        }
        let mut layout = QueueLayout::default();
        layout.partitions.insert(Priority::Critical, 1);
        let err = Embedded::open(dir.path(), layout)
            .err()
            .expect("must refuse");
        assert!(err.to_string().contains("cannot shrink"), "{err}");
    }
}

mod accept {
    use super::*;
    use mdc_core::contract::queue::fetch_n;
    use mdc_core::ports::{AcceptLog, ConsumerSpec, Created, Topic};
    use mdc_core::{Channel, Event, MessageRecord, Priority, Status};
    use mdc_embedded::EmbeddedAccept;

    fn accepted(to: &str) -> MessageRecord {
        MessageRecord::new(
            mdc_core::contract::sample_message(to),
            Status::Queued,
            Event::new("ingest", "accepted").status(Status::Queued),
        )
    }

    /// A new message is recorded and queued by one write; a second one
    /// with the same idempotency key gets the first and queues nothing.
    #[tokio::test]
    async fn a_new_message_is_recorded_and_queued_together_and_a_duplicate_queues_nothing() {
        let embedded = fresh();
        let log = EmbeddedAccept::new(embedded.store.clone(), embedded.queue.clone())
            .expect("store and queue share a database");
        let topic = Topic::Messages(Channel::Sms, Priority::Normal);
        let first = accepted("+14155550150");
        let payload = first.message.encode();
        let created = log
            .create_and_produce(&first, topic, &first.message.to, payload.clone())
            .await
            .expect("accept");
        assert_eq!(created, Created::New);
        let stored = embedded
            .store
            .get(&first.message.id)
            .await
            .expect("get")
            .expect("recorded");
        assert_eq!(stored.status, Status::Queued);
        assert_eq!(embedded.queue.depth(topic).expect("depth"), 1);

        let mut again = accepted("+14155550150");
        again.message.idempotency_key = first.message.idempotency_key.clone();
        match log
            .create_and_produce(&again, topic, &again.message.to, again.message.encode())
            .await
            .expect("accept again")
        {
            Created::Existing(existing) => assert_eq!(existing.message.id, first.message.id),
            other => panic!("expected the first message, got {other:?}"),
        }
        assert_eq!(
            embedded.queue.depth(topic).expect("depth"),
            1,
            "nothing more queued"
        );

        let consumer = embedded
            .queue
            .consumer(topic, ConsumerSpec { index: 0, count: 1 })
            .await
            .expect("consumer");
        let got = fetch_n(&consumer, 1).await;
        assert_eq!(got[0].payload, payload);
    }

    /// Store and queue in different databases cannot share a write.
    #[test]
    fn separate_databases_have_no_accept_log() {
        let (a, b) = (fresh(), fresh());
        assert!(EmbeddedAccept::new(a.store, b.queue).is_none());
    }

    /// A data directory of the earlier layout, with the queue in its own
    /// `queue.redb`: its waiting records move into `store.redb` in order,
    /// and the old file goes.
    #[tokio::test]
    async fn a_queue_file_of_the_earlier_layout_is_moved_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = Topic::Messages(Channel::Email, Priority::Critical);
        {
            let old = mdc_embedded::EmbeddedQueue::open(
                Db::open(&dir.path().join("queue.redb")).expect("old file"),
                QueueLayout::default(),
            )
            .expect("old queue");
            for i in 0..5_u8 {
                old.produce(topic, "same-key", vec![i])
                    .await
                    .expect("produce");
            }
        }
        let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
        assert!(
            !dir.path().join("queue.redb").exists(),
            "the old file is gone"
        );
        let consumer = embedded
            .queue
            .consumer(topic, ConsumerSpec { index: 0, count: 1 })
            .await
            .expect("consumer");
        let got: Vec<Vec<u8>> = fetch_n(&consumer, 5)
            .await
            .into_iter()
            .map(|d| d.payload)
            .collect();
        assert_eq!(got, (0..5_u8).map(|i| vec![i]).collect::<Vec<_>>());
        // New records follow the moved ones.
        embedded
            .queue
            .produce(topic, "same-key", vec![9])
            .await
            .expect("produce");
        assert_eq!(fetch_n(&consumer, 1).await[0].payload, vec![9]);
    }
}

/// 2,500 messages walked 100 at a time while as many more arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_message_once_while_more_arrive() {
    mdc_core::contract::store::walk_while_creating(fresh().store as Arc<dyn Store>, 2_500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_what_is_not_finished() {
    mdc_core::contract::queue::lag_counts_what_is_not_finished(fresh().queue as Arc<dyn Queue>)
        .await;
}

/// Space freed by retention is reused: rounds of "create a batch of
/// finished messages, let retention remove them" leave the store file at
/// the size the first round grew it to.
#[tokio::test]
async fn space_freed_by_retention_is_reused() {
    use mdc_core::ports::{Created, Transition, Updated};
    use mdc_core::{Event, MessageRecord, Status};

    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    let store = embedded.store;
    let file = dir.path().join("store.redb");
    let round = || async {
        for i in 0..300 {
            let mut record = MessageRecord::new(
                mdc_core::contract::sample_message(&format!("+1415555{i:04}")),
                Status::Queued,
                Event::new("test", "queued"),
            );
            record.message.created_at = mdc_core::now() - chrono::Duration::days(40);
            assert_eq!(store.create(&record).await.expect("create"), Created::New);
            {
                let now = mdc_core::now();
                store
                    .claim(
                        &record.message.id,
                        now,
                        now + chrono::Duration::seconds(30),
                        "test",
                    )
                    .await
                    .expect("claim");
            }
            let done = Transition::to(Status::Delivered, Event::new("test", "delivered"));
            assert_eq!(
                store
                    .update(&record.message.id, done)
                    .await
                    .expect("update"),
                Updated::Applied {
                    status: Status::Delivered
                }
            );
        }
        let before = Some(mdc_core::now() - chrono::Duration::days(30));
        let mut removed = 0;
        loop {
            let step = store.expire(before, None, 200).await.expect("expire");
            removed += step.removed;
            if step.removed == 0 {
                break;
            }
        }
        assert_eq!(removed, 300);
        std::fs::metadata(&file).expect("store file").len()
    };
    let first = round().await;
    let mut last = first;
    for _ in 0..4 {
        last = round().await;
    }
    assert!(
        last <= first + first / 4,
        "the store grew from {first} to {last} bytes over rounds that each removed what they added"
    );
}
