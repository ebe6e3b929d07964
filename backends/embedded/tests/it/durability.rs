//! What the embedded files keep across reopening and crashes, and the
//! move of an earlier version's queue file into the store's.

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

/// Writes `payloads` to `topic` of a queue in `path`, its own file as
/// in earlier versions, each under the key `key-<payload % 10>`, and
/// acknowledges one of them: the payload acknowledged.
async fn earlier_queue_file(path: &std::path::Path, topic: Topic, payloads: &[u8]) -> u8 {
    let queue =
        mdc_embedded::EmbeddedQueue::open(Db::open(path).expect("open"), QueueLayout::default())
            .expect("queue");
    for i in payloads {
        queue
            .produce(topic, &format!("key-{}", i % 10), vec![*i])
            .await
            .expect("produce");
    }
    let consumer = queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let first = fetch_n(&consumer, 1).await;
    consumer.ack(&first[0]).await.expect("ack");
    consumer.close().await.expect("close");
    first[0].payload[0]
}

fn sorted_payloads(batch: &[mdc_core::ports::Delivery]) -> Vec<u8> {
    let mut got: Vec<u8> = batch.iter().map(|d| d.payload[0]).collect();
    got.sort_unstable();
    got
}

/// A data directory of an earlier version, its queue in `queue.redb`
/// of its own: the records waiting there move into `store.redb` when
/// the queue opens, and the old file is removed. A crash before the
/// removal moves them again to the same places: nothing is doubled.
#[tokio::test]
async fn records_of_an_earlier_queue_file_move_into_the_store_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = Topic::Messages(Channel::Sms, Priority::Normal);
    let earlier = dir.path().join(mdc_embedded::EARLIER_QUEUE_FILE);
    let acked = earlier_queue_file(&earlier, topic, &[0, 1, 2, 3, 4, 5]).await;
    let waiting: Vec<u8> = (0..6).filter(|p| *p != acked).collect();
    let left = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&earlier, left.path().join("queue.redb")).expect("copy");
    {
        let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
        assert!(!earlier.exists(), "the earlier file is removed");
        assert_eq!(embedded.queue.depth(topic).expect("depth"), 5);
        let consumer = embedded
            .queue
            .consumer(topic, ConsumerSpec { index: 0, count: 1 })
            .await
            .expect("consumer");
        assert_eq!(sorted_payloads(&fetch_n(&consumer, 5).await), waiting);
    }

    // As after a crash between the move's commits and the removal.
    std::fs::copy(left.path().join("queue.redb"), &earlier).expect("copy back");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("reopen");
    assert!(!earlier.exists());
    assert_eq!(
        embedded.queue.depth(topic).expect("depth"),
        5,
        "nothing doubled"
    );
    // New records under the same keys land in the partitions of the
    // moved ones: none takes a moved record's place.
    for i in &waiting {
        embedded
            .queue
            .produce(topic, &format!("key-{i}"), vec![10 + i])
            .await
            .expect("produce");
    }
    let consumer = embedded
        .queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let mut expected = waiting.clone();
    expected.extend(waiting.iter().map(|i| 10 + i));
    assert_eq!(sorted_payloads(&fetch_n(&consumer, 10).await), expected);
}

/// An earlier queue file whose record differs from the one the store's
/// file holds at the same place stops the opening, naming the file,
/// which is left in place.
#[tokio::test]
async fn an_earlier_queue_file_that_disagrees_with_the_store_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = Topic::Messages(Channel::Sms, Priority::Normal);
    let earlier = dir.path().join(mdc_embedded::EARLIER_QUEUE_FILE);
    earlier_queue_file(&earlier, topic, &[0, 1, 2, 3]).await;
    let other = tempfile::tempdir().expect("tempdir");
    // The same keys, so the same places, with other payloads.
    earlier_queue_file(&other.path().join("q.redb"), topic, &[10, 11, 12, 13]).await;
    std::fs::copy(other.path().join("q.redb"), dir.path().join("store.redb")).expect("copy");
    let error = Embedded::open(dir.path(), QueueLayout::default())
        .err()
        .expect("refused");
    let error = error.to_string();
    assert!(error.contains("queue.redb"), "{error}");
    assert!(error.contains("differs"), "{error}");
    assert!(earlier.exists(), "left for the operator");
}

/// An earlier queue file that cannot be read stops the opening with an
/// error naming it, and is left in place; an empty one (its creation
/// cut short) is removed.
#[tokio::test]
async fn an_unreadable_earlier_queue_file_is_named_and_an_empty_one_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let earlier = dir.path().join(mdc_embedded::EARLIER_QUEUE_FILE);
    std::fs::write(&earlier, b"not a database").expect("write");
    let error = Embedded::open(dir.path(), QueueLayout::default())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("queue.redb"), "{error}");
    assert!(earlier.exists(), "left for the operator");

    std::fs::write(&earlier, b"").expect("write");
    let embedded = Embedded::open(dir.path(), QueueLayout::default()).expect("open");
    assert!(!earlier.exists());
    assert_eq!(embedded.queue.depth(Topic::Responses).expect("depth"), 0);
}

/// Closing a consumer makes its acknowledgements durable, so a stop
/// that never closes the data file (another thread still holding
/// the queue as the process exits) redelivers nothing. What a crash
/// would leave is read from a copy of the file taken while it is open.
#[tokio::test]
async fn a_closed_consumers_acknowledgements_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = Topic::Responses;
    let queue = mdc_embedded::open_queue(dir.path(), QueueLayout::default()).expect("open");
    queue
        .produce(topic, "k", b"done".to_vec())
        .await
        .expect("produce");
    let consumer = queue
        .consumer(topic, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let got = fetch_n(&consumer, 1).await;
    consumer.ack(&got[0]).await.expect("ack");
    assert_eq!(queue.depth(topic).expect("depth"), 0);
    assert_eq!(
        depth_after_a_crash(dir.path(), topic),
        1,
        "before the close, a crash redelivers it"
    );
    consumer.close().await.expect("close");
    assert_eq!(depth_after_a_crash(dir.path(), topic), 0);
}

/// Records left in `topic` of the queue in `dir` as a crash now would
/// leave them: those of its last durable commit.
fn depth_after_a_crash(dir: &std::path::Path, topic: Topic) -> u64 {
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::copy(dir.join("store.redb"), copy.path().join("store.redb")).expect("copy");
    let queue =
        mdc_embedded::open_queue(copy.path(), QueueLayout::default()).expect("the copy opens");
    queue.depth(topic).expect("depth")
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
