//! The message's channel kept in its state, and the brief a change hands
//! out from it ([`Store::update_and_brief`]).

use super::*;
use mdc_core::Channel;

/// An email, accepted and queued.
async fn accepted_email(store: &EmbeddedStore) -> MessageId {
    let mut message = sample_message("ada@example.com");
    message.content = mdc_core::Content::Email {
        from: "noreply@example.com".into(),
        subject: "Hi".into(),
        text: Some("Hello".into()),
        html: None,
        attachments: Vec::new(),
    };
    let record = MessageRecord::accepted(message, "ingest", "accepted");
    store.create(&record).await.expect("store answers");
    record.message.id
}

fn delivered() -> Transition {
    Transition::Reported {
        status: Status::Delivered,
        provider: "kaleyra".into(),
        provider_message_id: "kal-1".into(),
        event: Event::new("response-handler", "delivered (vendor report)"),
    }
}

/// Writes `id`'s message as bytes no decoder reads.
fn damage_message(db: &Db, id: &MessageId) {
    db.write_now(|txn| {
        txn.open_table(MESSAGES)?
            .insert(id.bits(), b"not a message".as_slice())?;
        Ok(())
    })
    .expect("store answers");
}

/// Every change keeps the channel the message was created with, although
/// the rule that makes it sees a stand-in message.
#[tokio::test]
async fn a_change_keeps_the_messages_channel_in_its_state() {
    let (_dir, db, store) = fresh();
    let id = accepted_email(&store).await;
    assert_eq!(state_of(&db, &id).channel, Some(Channel::Email));
    claim_now(&store, &id).await;
    assert_eq!(state_of(&db, &id).channel, Some(Channel::Email));
    store.update(&id, sent(1)).await.expect("store answers");
    assert_eq!(state_of(&db, &id).channel, Some(Channel::Email));
}

/// A state that keeps its channel gives the brief without the message: a
/// message that cannot be decoded does not matter to it.
#[tokio::test]
async fn a_brief_is_made_without_reading_the_message() {
    let (_dir, db, store) = fresh();
    let id = accepted_email(&store).await;
    claim_now(&store, &id).await;
    store.update(&id, sent(1)).await.expect("store answers");
    damage_message(&db, &id);
    let (updated, brief) = store
        .update_and_brief(&id, delivered())
        .await
        .expect("store answers");
    assert_eq!(
        updated,
        Updated::Applied {
            status: Status::Delivered
        }
    );
    let brief = brief.expect("a brief");
    assert_eq!(
        (brief.channel, brief.status),
        (Channel::Email, Status::Delivered)
    );
    assert!(store.get(&id).await.is_err(), "the message cannot be read");
}

/// A state written before the channel was kept gives the brief's channel
/// from the message, and is left without one.
#[tokio::test]
async fn a_state_without_its_channel_takes_the_brief_from_the_message() {
    let (_dir, db, store) = fresh();
    let id = accepted_email(&store).await;
    claim_now(&store, &id).await;
    store.update(&id, sent(1)).await.expect("store answers");
    let mut state = state_of(&db, &id);
    state.channel = None;
    db.write_now(|txn| {
        txn.open_table(STATES)?
            .insert(id.bits(), state.encode()?.as_slice())?;
        Ok(())
    })
    .expect("store answers");
    let (_, brief) = store
        .update_and_brief(&id, delivered())
        .await
        .expect("store answers");
    assert_eq!(brief.expect("a brief").channel, Channel::Email);
    assert_eq!(state_of(&db, &id).channel, None);
}
