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

/// The embedded backends run one process: its dispatchers are counted in
/// memory.
mod fleet {
    use super::*;
    use mdc_core::ports::Fleet;
    mdc_core::fleet_contract!(async {
        Arc::new(mdc_embedded::LocalFleet::default()) as Arc<dyn Fleet>
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

    /// Webhook delivery that only wants `delivered` events.
    struct DeliveredOnly;

    impl mdc_core::outcome::OutcomeInterest for DeliveredOnly {
        fn wants(&self, event: &mdc_core::outcome::OutcomeEvent) -> bool {
            event.kind == "message.delivered"
        }
    }

    /// Webhook delivery with no endpoint: it wants no event at all.
    struct NoEndpoint;

    impl mdc_core::outcome::OutcomeInterest for NoEndpoint {
        fn wants(&self, _event: &mdc_core::outcome::OutcomeEvent) -> bool {
            false
        }

        fn wants_any(&self) -> bool {
            false
        }
    }

    fn outcome(kind: &str) -> mdc_core::outcome::OutcomeEvent {
        let id = mdc_core::MessageId::generate();
        mdc_core::outcome::OutcomeEvent {
            schema: mdc_core::outcome::SCHEMA.to_owned(),
            event_id: format!("evt_{id}_{kind}"),
            kind: kind.to_owned(),
            message_id: Some(id),
            reference: None,
            metadata: None,
            service: None,
            status: None,
            channel: mdc_core::Channel::Sms,
            provider: None,
            reason: None,
            recipient: None,
            vendor_at: None,
            at: mdc_core::now(),
        }
    }

    /// With MDC's webhook delivery the only reader of outcomes (the default
    /// layout), an event no endpoint wants is not written; with another
    /// group in the layout, or before the delivery says what it wants,
    /// every event is.
    #[tokio::test]
    async fn outcomes_no_reader_wants_are_not_written() {
        use mdc_core::ports::Topic;
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Embedded::open(dir.path(), QueueLayout::default())
            .expect("open")
            .queue;
        let depth = || queue.depth(Topic::Outcomes).expect("depth");
        outcome("message.sent")
            .publish(&*queue)
            .await
            .expect("published");
        assert_eq!(depth(), 1, "written while the interest is unknown");
        assert!(queue.wants_outcomes());

        queue.set_webhook_interest(Arc::new(DeliveredOnly));
        assert!(queue.wants_outcomes(), "some event is wanted");
        outcome("message.sent")
            .publish(&*queue)
            .await
            .expect("published");
        assert_eq!(depth(), 1, "an event no endpoint wants is skipped");
        outcome("message.delivered")
            .publish(&*queue)
            .await
            .expect("published");
        assert_eq!(depth(), 2, "a wanted event is written");
        queue.set_webhook_interest(Arc::new(NoEndpoint));
        assert!(!queue.wants_outcomes(), "no event is wanted");

        let dir = tempfile::tempdir().expect("tempdir");
        let layout = QueueLayout {
            outcome_groups: vec!["webhooks".into(), "billing".into()],
            ..QueueLayout::default()
        };
        let queue = Embedded::open(dir.path(), layout).expect("open").queue;
        queue.set_webhook_interest(Arc::new(NoEndpoint));
        assert!(queue.wants_outcomes(), "another group reads every event");
        outcome("message.sent")
            .publish(&*queue)
            .await
            .expect("published");
        assert_eq!(
            queue.depth(Topic::Outcomes).expect("depth"),
            2,
            "another group reads every event: one copy per group"
        );
    }

    /// Produces and acknowledgements made at the same time share commits
    /// (each table opened once per commit): every one of them still lands,
    /// and a reopened queue holds exactly the records not acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_produces_and_acknowledgements_each_land() {
        use futures::future::join_all;
        use mdc_core::contract::queue::fetch_n;
        use mdc_core::ports::{ConsumerSpec, Topic};
        use mdc_core::{Channel, Priority};

        let dir = tempfile::tempdir().expect("tempdir");
        let topics = [
            Topic::Messages(Channel::Sms, Priority::Normal),
            Topic::Messages(Channel::Email, Priority::Bulk),
            Topic::Responses,
        ];
        let acknowledged;
        {
            let queue = Embedded::open(dir.path(), QueueLayout::default())
                .expect("open")
                .queue;
            join_all((0..600).map(|i| {
                let queue = queue.clone();
                async move {
                    queue
                        .produce(topics[i % 3], &format!("key-{i}"), vec![i as u8])
                        .await
                        .expect("produce")
                }
            }))
            .await;
            for topic in topics {
                assert_eq!(queue.depth(topic).expect("depth"), 200, "{topic}");
            }
            let spec = ConsumerSpec { index: 0, count: 1 };
            let sms = queue.consumer(topics[0], spec).await.expect("consumer");
            let got = fetch_n(&sms, 200).await;
            let mut offsets: Vec<_> = got.iter().map(|d| (d.partition, d.offset)).collect();
            offsets.sort_unstable();
            offsets.dedup();
            assert_eq!(offsets.len(), 200, "every record has its own offset");
            // Half acknowledged at once, while more are produced elsewhere.
            let (acks, more) = tokio::join!(
                join_all(got.iter().step_by(2).map(|d| sms.ack(d))),
                join_all((600..700).map(|i| {
                    let queue = queue.clone();
                    async move { queue.produce(topics[1], &format!("key-{i}"), vec![1]).await }
                })),
            );
            assert!(acks.iter().chain(more.iter()).all(Result::is_ok));
            acknowledged = acks.len();
            assert_eq!(
                queue.depth(topics[0]).expect("depth"),
                200 - acknowledged as u64
            );
            assert_eq!(queue.depth(topics[1]).expect("depth"), 300);
        }
        let reopened = Embedded::open(dir.path(), QueueLayout::default())
            .expect("reopen")
            .queue;
        assert_eq!(acknowledged, 100);
        assert_eq!(reopened.depth(topics[0]).expect("depth"), 100);
        assert_eq!(reopened.depth(topics[1]).expect("depth"), 300);
        assert_eq!(reopened.depth(topics[2]).expect("depth"), 200);
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

mod durability;

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
/// the size the first rounds grew it to.
#[tokio::test]
async fn space_freed_by_retention_is_reused() {
    use mdc_core::contract::store::aged;
    use mdc_core::Status;

    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    let store = embedded.store as Arc<dyn Store>;
    let file = dir.path().join("store.redb");
    let round = || async {
        for i in 0..300 {
            aged(
                &store,
                &format!("+1415555{i:04}"),
                chrono::Duration::days(40),
                Status::Delivered,
            )
            .await;
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
    // Without reuse every round would add its size: eight rounds end at
    // about four times the first two, and each round's file is larger
    // than the one before. With reuse the file stays where the first
    // rounds took it, give or take where its last pages fell: the size
    // moves both ways between rounds, and a round can end with the file
    // grown by a region later rounds give back (measured: 250 KB rounds
    // with one of 390 KB; 190 KB rounds with 420, 410 and 310 KB after
    // them), so the smaller of the last two rounds is compared, with room
    // for such a region but not for a round's worth each round.
    let mut sizes = Vec::new();
    for _ in 0..8 {
        sizes.push(round().await);
    }
    let early = sizes[..2].iter().max().copied().unwrap_or_default();
    let late = sizes[6..].iter().min().copied().unwrap_or_default();
    assert!(
        late <= early * 2,
        "the store grew from {early} to {late} bytes over rounds that each removed what they added ({sizes:?})"
    );
}

/// Writes waiting together share one set of open tables and one write of
/// the status counts per commit: many at once, some moving the same
/// message twice in one commit, leave the counts exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_stay_exact_when_writes_share_commits() {
    use mdc_core::contract::store::aged;
    use mdc_core::Status;

    let store = fresh().store as Arc<dyn Store>;
    let statuses = [Status::Queued, Status::Delivered, Status::Failed];
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            let status = statuses[i % 3];
            tokio::spawn(async move {
                let record = aged(
                    &store,
                    &format!("+1415555{i:04}"),
                    chrono::Duration::zero(),
                    status,
                )
                .await;
                // Every tenth is created and removed again.
                if i % 10 == 0 && status == Status::Queued {
                    assert!(store.discard(&record).await.expect("discard"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let counts = store.count_by_status().await.expect("counts");
    assert_eq!(counts.get(&Status::Queued), Some(&(100 - 10)));
    assert_eq!(counts.get(&Status::Delivered), Some(&100));
    assert_eq!(counts.get(&Status::Failed), Some(&100));
    assert_eq!(counts.get(&Status::Sending), None, "claims moved on");
    let listed = store
        .list(&mdc_core::ports::ListFilter {
            status: Some(Status::Queued),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 90);
}

/// A database writer that stops with gathered writes waiting (here it
/// panics in a job; a transaction that cannot begin drops its jobs the
/// same way): those writes fail instead of waiting for ever, and so does
/// every later one, rather than joining a job that will never run.
mod a_stopped_writer {
    use super::*;
    use std::future::Future;
    use std::time::Duration;

    use futures::poll;
    use mdc_core::ports::Topic;
    use mdc_core::{Channel, Priority};
    use mdc_embedded::{DbError, EmbeddedQueue, EmbeddedStore};

    /// Queues a job that holds the writer until `release` is sent, then
    /// panics there, ending the writer thread.
    async fn stall(db: &Db) -> (std::sync::mpsc::Sender<()>, impl Future + '_) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let mut stalled = Box::pin(db.write(true, move |_| -> Result<(), DbError> {
            let _ = gate.recv();
            panic!("the writer stops");
        }));
        assert!(poll!(stalled.as_mut()).is_pending(), "queued");
        (release, stalled)
    }

    /// Fails (or times out) unless `write` ends with an error.
    async fn fails<T: std::fmt::Debug>(
        write: impl Future<Output = Result<T, impl std::fmt::Debug>>,
    ) {
        match tokio::time::timeout(Duration::from_secs(10), write).await {
            Ok(result) => assert!(result.is_err(), "{result:?}"),
            Err(_) => panic!("the write waits for a job that will never run"),
        }
    }

    #[tokio::test]
    async fn queue_writes_waiting_for_it_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("store.redb")).expect("open");
        let queue = EmbeddedQueue::open(db.clone(), QueueLayout::default()).expect("queue");
        let topic = Topic::Messages(Channel::Sms, Priority::Normal);
        let (release, _stalled) = stall(&db).await;
        let mut waiting = Box::pin(queue.produce(topic, "k", vec![1]));
        assert!(poll!(waiting.as_mut()).is_pending(), "waits for the writer");
        release.send(()).expect("release");
        fails(waiting).await;
        fails(queue.produce(topic, "k", vec![2])).await;
    }

    #[tokio::test]
    async fn store_writes_waiting_for_it_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("store.redb")).expect("open");
        let store = EmbeddedStore::open(db.clone()).expect("store");
        let record = |to: &str| {
            mdc_core::MessageRecord::new(
                mdc_core::contract::sample_message(to),
                mdc_core::Status::Queued,
                mdc_core::Event::new("test", "queued"),
            )
        };
        let (first, second) = (record("+14155550123"), record("+14155550124"));
        let (release, _stalled) = stall(&db).await;
        let mut waiting = Box::pin(store.create(&first));
        assert!(poll!(waiting.as_mut()).is_pending(), "waits for the writer");
        release.send(()).expect("release");
        fails(waiting).await;
        fails(store.create(&second)).await;
    }
}
