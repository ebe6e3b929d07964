//! The [`Webhooks`] contract.

use std::sync::Arc;

use chrono::Duration;

use crate::ports::webhooks::{
    PendingDelivery, WebhookAttempt, WebhookEndpoint, WebhookSecret, Webhooks,
};
use crate::{Channel, MessageId};

fn endpoint(url: &str) -> WebhookEndpoint {
    let now = crate::now();
    WebhookEndpoint {
        id: format!("wh_{}", ulid::Ulid::new()),
        service: Some("billing".into()),
        url: url.into(),
        events: vec!["message.failed".into()],
        channels: vec![Channel::Sms],
        description: "alerts".into(),
        secrets: vec![WebhookSecret {
            secret: "whsec_c2VjcmV0".into(),
            expires_at: None,
        }],
        disabled: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    }
}

fn attempt(endpoint_id: &str, n: u32, at: crate::Timestamp) -> WebhookAttempt {
    WebhookAttempt {
        endpoint_id: endpoint_id.into(),
        event_id: format!("evt_{n}"),
        attempt: n,
        at,
        status: Some(500),
        latency_ms: 12,
        error: None,
        response: "oops".into(),
        succeeded: false,
        event: Some(serde_json::json!({"event_id": format!("evt_{n}")})),
    }
}

pub async fn keeps_endpoints(webhooks: Arc<dyn Webhooks>) {
    let first = endpoint("https://a.example/hook");
    let second = endpoint("https://b.example/hook");
    webhooks.create(&first).await.expect("create");
    webhooks.create(&second).await.expect("create");
    assert_eq!(
        webhooks.get(&first.id).await.expect("get"),
        Some(first.clone())
    );
    let mut ids: Vec<String> = webhooks
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    let mut expected = vec![first.id.clone(), second.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let mut changed = first.clone();
    changed.url = "https://c.example/hook".into();
    assert!(webhooks.update(&changed).await.expect("update"));
    assert_eq!(webhooks.get(&first.id).await.expect("get"), Some(changed));
    assert!(webhooks.delete(&first.id).await.expect("delete"));
    assert!(!webhooks.delete(&first.id).await.expect("delete again"));
    assert_eq!(webhooks.get(&first.id).await.expect("get"), None);
    assert!(!webhooks
        .update(&endpoint("https://x.example"))
        .await
        .expect("update unknown"));
}

pub async fn lists_attempts_newest_first(webhooks: Arc<dyn Webhooks>) {
    let hook = endpoint("https://a.example/hook");
    let other = endpoint("https://b.example/hook");
    webhooks.create(&hook).await.expect("create");
    webhooks.create(&other).await.expect("create");
    let start = crate::now() - Duration::minutes(10);
    for n in 1..=3 {
        webhooks
            .record_attempt(&attempt(&hook.id, n, start + Duration::minutes(n.into())))
            .await
            .expect("record");
    }
    webhooks
        .record_attempt(&attempt(&other.id, 9, start))
        .await
        .expect("record");
    let numbers = |attempts: Vec<WebhookAttempt>| -> Vec<u32> {
        attempts.into_iter().map(|a| a.attempt).collect()
    };
    assert_eq!(
        numbers(webhooks.attempts(&hook.id, None, 10).await.expect("list")),
        [3, 2, 1]
    );
    assert_eq!(
        numbers(webhooks.attempts(&hook.id, None, 2).await.expect("list")),
        [3, 2]
    );
    assert_eq!(
        numbers(
            webhooks
                .attempts(&hook.id, Some(start + Duration::minutes(2)), 10)
                .await
                .expect("list")
        ),
        [3, 2]
    );
    let kept = webhooks.attempts(&hook.id, None, 1).await.expect("list");
    assert_eq!(kept[0], attempt(&hook.id, 3, start + Duration::minutes(3)));
    assert!(webhooks.delete(&hook.id).await.expect("delete"));
    assert!(webhooks
        .attempts(&hook.id, None, 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        webhooks
            .attempts(&other.id, None, 10)
            .await
            .expect("list")
            .len(),
        1
    );
}

pub async fn prunes_old_attempts(webhooks: Arc<dyn Webhooks>) {
    let hook = endpoint("https://a.example/hook");
    let other = endpoint("https://b.example/hook");
    webhooks.create(&hook).await.expect("create");
    webhooks.create(&other).await.expect("create");
    let now = crate::now();
    for (n, age) in [(1, 90), (2, 30), (3, 5)] {
        webhooks
            .record_attempt(&attempt(&hook.id, n, now - Duration::minutes(age)))
            .await
            .expect("record");
    }
    webhooks
        .record_attempt(&attempt(&other.id, 4, now - Duration::minutes(120)))
        .await
        .expect("record");
    let pruned = webhooks
        .prune_attempts(now - Duration::minutes(60))
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    let left: Vec<u32> = webhooks
        .attempts(&hook.id, None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(left, [3, 2]);
    assert!(webhooks
        .attempts(&other.id, None, 10)
        .await
        .expect("list")
        .is_empty());
}

pub async fn keeps_pending_deliveries(webhooks: Arc<dyn Webhooks>) {
    let pending = PendingDelivery {
        key: MessageId::generate(),
        endpoint_id: "wh_1".into(),
        event_id: "evt_1".into(),
        event: serde_json::json!({"event_id": "evt_1", "type": "message.failed"}),
        attempts: 2,
    };
    assert_eq!(webhooks.pending(&pending.key).await.expect("get"), None);
    webhooks.save_pending(&pending).await.expect("save");
    assert_eq!(
        webhooks.pending(&pending.key).await.expect("get"),
        Some(pending.clone())
    );
    let mut later = pending.clone();
    later.attempts = 3;
    webhooks.save_pending(&later).await.expect("save again");
    assert_eq!(
        webhooks.pending(&pending.key).await.expect("get"),
        Some(later)
    );
    webhooks.remove_pending(&pending.key).await.expect("remove");
    assert_eq!(webhooks.pending(&pending.key).await.expect("get"), None);
}

/// Expands to one test per case of the webhook store contract.
#[macro_export]
macro_rules! webhooks_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            webhooks,
            $make,
            [
                keeps_endpoints,
                lists_attempts_newest_first,
                prunes_old_attempts,
                keeps_pending_deliveries,
            ]
        );
    };
}
