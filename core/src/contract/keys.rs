//! The [`ApiKeys`] contract.

use std::sync::Arc;

use crate::ports::keys::{ApiKey, ApiKeys, Scope};

fn key(service: &str, scopes: &[Scope]) -> ApiKey {
    ApiKey {
        id: format!("key_{}", ulid::Ulid::new()),
        service: service.to_owned(),
        scopes: scopes.to_vec(),
        secret_hash: "ab".repeat(32),
        description: format!("{service} key"),
        created_at: crate::now(),
        revoked_at: None,
    }
}

pub async fn stores_and_finds_a_key(keys: Arc<dyn ApiKeys>) {
    let billing = key("billing", &[Scope::Send, Scope::Read]);
    keys.create(&billing).await.expect("create");
    let got = keys.get(&billing.id).await.expect("get").expect("present");
    assert_eq!(got, billing);
    assert!(keys.get("key_unknown").await.expect("get").is_none());
}

pub async fn lists_oldest_first(keys: Arc<dyn ApiKeys>) {
    assert!(keys.list().await.expect("list").is_empty());
    let first = key("billing", &[Scope::Send]);
    keys.create(&first).await.expect("create");
    // Backends may keep times to the millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let second = key("support", &[Scope::Read, Scope::ReadPii]);
    keys.create(&second).await.expect("create");
    let listed: Vec<String> = keys
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![first.id, second.id]);
}

pub async fn revoking_is_kept_and_happens_once(keys: Arc<dyn ApiKeys>) {
    let ops = key("ops", &[Scope::Admin]);
    keys.create(&ops).await.expect("create");
    let at = crate::now();
    assert!(keys.revoke(&ops.id, at).await.expect("revoke"));
    let later = at + chrono::Duration::minutes(5);
    assert!(!keys.revoke(&ops.id, later).await.expect("revoke again"));
    assert!(!keys
        .revoke("key_unknown", at)
        .await
        .expect("revoke unknown"));
    let got = keys.get(&ops.id).await.expect("get").expect("present");
    assert!(!got.is_active());
    let revoked = got.revoked_at.expect("revoked_at");
    assert!(
        (revoked - at).num_milliseconds().abs() <= 1,
        "the first revocation time is kept: {revoked} vs {at}"
    );
    assert_eq!(keys.list().await.expect("list").len(), 1, "still listed");
}

#[macro_export]
macro_rules! keys_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            keys,
            $make,
            [
                stores_and_finds_a_key,
                lists_oldest_first,
                revoking_is_kept_and_happens_once,
            ]
        );
    };
}
