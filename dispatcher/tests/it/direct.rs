//! Messages a service produced straight to its topic (the client's direct
//! transport): recorded by the dispatcher, sent once, copies under their
//! key dropped, suppressed recipients failed unsent.

use std::time::Duration;

use mdc_core::ports::Store;
use mdc_core::{MessageId, Status};

use super::config;
use super::harness::Harness;

/// As the client's direct transport produces it, for `service`.
fn direct(to: &str, key: &str) -> mdc_core::Message {
    let mut message = mdc_core::contract::sample_message(to);
    message.direct = true;
    message.service = Some("billing".to_owned());
    message.idempotency_key = key.to_owned();
    message
}

#[tokio::test(start_paused = true)]
async fn a_directly_produced_message_is_recorded_then_sent_once_and_copies_are_dropped() {
    let h = Harness::start(config(), None).await;
    let message = direct("+14155550180", "order-1");
    h.produce_direct(&message).await;
    // A redelivery of the same record, and the service sending the same
    // message again under its key (a new id, as each send makes one).
    h.produce_direct(&message).await;
    let mut again = message.clone();
    again.id = MessageId::generate();
    h.produce_direct(&again).await;
    h.wait_for(&message.id, Status::Sent, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.provider.sends("+14155550180"), 1, "sent exactly once");
    let record = h.record(&message.id).await;
    assert_eq!(record.message.service.as_deref(), Some("billing"));
    assert_eq!(record.events[0].status, Some(Status::Accepted));
    assert!(
        record.events[0]
            .details
            .contains("produced directly by billing"),
        "{:?}",
        record.events[0]
    );
    assert!(h.store.get(&again.id).await.expect("get").is_none());
    h.stop().await;
}

/// A direct copy of a message an HTTP submission holds the key for, not
/// sent yet, is dropped; that message is queued again and noted: should the
/// submission's own produce have failed, its record is kept for the copy
/// the service was told was taken, and sent.
#[tokio::test(start_paused = true)]
async fn a_direct_copy_dropped_for_an_unsent_holder_keeps_that_holder() {
    let h = Harness::start(config(), None).await;
    let mut holder = direct("+14155550193", "order-10");
    holder.direct = false;
    let record = mdc_core::MessageRecord::accepted(holder.clone(), "ingest", "accepted");
    h.store.create(&record).await.expect("create");
    let mut copy = holder.clone();
    copy.id = MessageId::generate();
    copy.direct = true;
    h.produce_direct(&copy).await;
    let noted = || async {
        h.record(&holder.id)
            .await
            .events
            .iter()
            .any(|e| e.details.contains("produced again directly by billing"))
    };
    for _ in 0..100 {
        if noted().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(noted().await, "{:#?}", h.record(&holder.id).await.events);
    assert!(h.store.get(&copy.id).await.expect("get").is_none());
    assert!(
        !h.store.discard(&record).await.expect("discard"),
        "kept for the direct copy"
    );
    h.wait_for(&holder.id, Status::Sent, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.provider.sends("+14155550193"), 1, "sent once");
    h.stop().await;
}

/// A service that produced one id twice with other content: the record
/// stored first is what is sent, not the later copy (a directly produced
/// message is claimed by id, so the store's copy is the one sent).
#[tokio::test(start_paused = true)]
async fn a_direct_copy_of_a_stored_id_sends_the_stored_message() {
    let h = Harness::start(config(), None).await;
    let first = direct("+14155550190", "order-9");
    let record = mdc_core::MessageRecord::accepted(
        first.clone(),
        "dispatcher",
        "accepted: produced directly by billing",
    );
    h.store.create(&record).await.expect("create");
    let mut other = first.clone();
    other.to = "+14155550191".to_owned();
    h.produce_direct(&other).await;
    h.wait_for(&first.id, Status::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(h.provider.sends("+14155550190"), 1, "the stored message");
    assert_eq!(h.provider.sends("+14155550191"), 0, "not the later copy");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_directly_produced_message_to_a_suppressed_recipient_fails_unsent() {
    use mdc_core::ports::{Suppression, SuppressionList};

    let h = Harness::start(config(), None).await;
    h.suppressions
        .add(&Suppression {
            channel: mdc_core::Channel::Sms,
            recipient: "+14155550181".to_owned(),
            reason: "hard bounce".to_owned(),
            source: "manual".to_owned(),
            message_id: None,
            at: mdc_core::now(),
        })
        .await
        .expect("add");
    let message = direct("+14155550181", "order-2");
    h.produce_direct(&message).await;
    h.wait_for(&message.id, Status::Failed, Duration::from_secs(10))
        .await;
    // A redelivery finds it failed and sends nothing either.
    h.produce_direct(&message).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.provider.calls("+14155550181"), 0);
    let record = h.record(&message.id).await;
    assert!(
        record
            .events
            .iter()
            .any(|e| e.details.contains("suppressed")),
        "{:#?}",
        record.events
    );
    h.stop().await;
}
