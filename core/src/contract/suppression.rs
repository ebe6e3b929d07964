//! The [`SuppressionList`] contract.

use std::sync::Arc;

use crate::ports::suppression::{Suppression, SuppressionList};
use crate::Channel;

fn entry(channel: Channel, recipient: &str, reason: &str) -> Suppression {
    Suppression {
        channel,
        recipient: recipient.to_owned(),
        reason: reason.to_owned(),
        source: "manual".to_owned(),
        message_id: None,
        at: crate::now(),
    }
}

pub async fn adds_finds_and_removes(list: Arc<dyn SuppressionList>) {
    let bounced = entry(Channel::Email, "bounced@example.com", "hard bounce");
    assert!(list.add(&bounced).await.expect("add"));
    let got = list
        .get(Channel::Email, "bounced@example.com")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.reason, "hard bounce");
    assert_eq!(got.source, "manual");
    assert!(list
        .get(Channel::Email, "other@example.com")
        .await
        .expect("get")
        .is_none());
    assert!(list
        .remove(Channel::Email, "bounced@example.com")
        .await
        .expect("remove"));
    assert!(!list
        .remove(Channel::Email, "bounced@example.com")
        .await
        .expect("remove again"));
    assert!(list
        .get(Channel::Email, "bounced@example.com")
        .await
        .expect("get")
        .is_none());
}

pub async fn the_first_entry_is_kept(list: Arc<dyn SuppressionList>) {
    assert!(list
        .add(&entry(Channel::Sms, "+14155550120", "opted out"))
        .await
        .expect("add"));
    assert!(!list
        .add(&entry(Channel::Sms, "+14155550120", "later reason"))
        .await
        .expect("add again"));
    let got = list
        .get(Channel::Sms, "+14155550120")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.reason, "opted out");
}

pub async fn channels_are_separate(list: Arc<dyn SuppressionList>) {
    list.add(&entry(Channel::Sms, "+14155550121", "opted out"))
        .await
        .expect("add");
    // Backends may keep times to the millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    assert!(list
        .get(Channel::Push, "+14155550121")
        .await
        .expect("get")
        .is_none());
    list.add(&entry(Channel::Email, "a@example.com", "complaint"))
        .await
        .expect("add");
    let sms = list.list(Some(Channel::Sms), 10).await.expect("list");
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].recipient, "+14155550121");
    let all = list.list(None, 10).await.expect("list");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].recipient, "a@example.com", "newest first");
    assert_eq!(list.list(None, 1).await.expect("list").len(), 1);
}

#[macro_export]
macro_rules! suppression_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            suppression,
            $make,
            [
                adds_finds_and_removes,
                the_first_entry_is_kept,
                channels_are_separate,
            ]
        );
    };
}
