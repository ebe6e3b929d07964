//! The [`MessageCache`] contract.

use std::sync::Arc;
use std::time::Duration;

use crate::ports::cache::{CachedMessage, MessageCache};
use crate::{Channel, MessageId};

fn entry(channel: Channel) -> CachedMessage {
    CachedMessage {
        message_id: MessageId::generate(),
        channel,
    }
}

pub async fn finds_what_was_put_per_provider(cache: Arc<dyn MessageCache>) {
    let sms = entry(Channel::Sms);
    cache
        .put("kaleyra", "k-1", sms.clone(), Duration::from_secs(60))
        .await
        .expect("put");
    assert_eq!(cache.get("kaleyra", "k-1").await.expect("get"), Some(sms));
    assert_eq!(
        cache.get("ses", "k-1").await.expect("get"),
        None,
        "ids are per provider"
    );
    assert_eq!(cache.get("kaleyra", "k-2").await.expect("get"), None);
}

pub async fn a_later_put_replaces(cache: Arc<dyn MessageCache>) {
    cache
        .put("ses", "s-1", entry(Channel::Email), Duration::from_secs(60))
        .await
        .expect("put");
    let newer = entry(Channel::Email);
    cache
        .put("ses", "s-1", newer.clone(), Duration::from_secs(60))
        .await
        .expect("put");
    assert_eq!(cache.get("ses", "s-1").await.expect("get"), Some(newer));
}

pub async fn entries_expire(cache: Arc<dyn MessageCache>) {
    cache
        .put(
            "sns",
            "n-1",
            entry(Channel::Push),
            Duration::from_millis(200),
        )
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.get("sns", "n-1").await.expect("get"), None);
}

/// Expands to one test per case of the message cache contract.
#[macro_export]
macro_rules! cache_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            cache,
            $make,
            [
                finds_what_was_put_per_provider,
                a_later_put_replaces,
                entries_expire
            ]
        );
    };
}
