//! The [`DeviceRegistry`] contract.

use std::sync::Arc;

use crate::ports::devices::{Device, DeviceRegistry, Platform};

pub async fn registers_and_finds_devices(registry: Arc<dyn DeviceRegistry>) {
    let phone = Device::new("alice", Platform::Apns, "token-a1");
    let (stored, new) = registry.register(&phone).await.expect("register");
    assert!(new);
    assert_eq!(stored, phone);
    assert_eq!(
        registry.get(&phone.id).await.expect("get"),
        Some(phone.clone())
    );
    assert_eq!(
        registry.by_token("token-a1").await.expect("by token"),
        Some(phone.clone())
    );
    assert_eq!(registry.get("dev_missing").await.expect("get"), None);
}

pub async fn registering_a_known_token_updates_that_device(registry: Arc<dyn DeviceRegistry>) {
    let first = Device::new("alice", Platform::Fcm, "token-b1");
    registry.register(&first).await.expect("register");
    let mut again = Device::new("bob", Platform::Fcm, "token-b1");
    again.endpoint = Some("arn:endpoint/b1".into());
    let (stored, new) = registry.register(&again).await.expect("register");
    assert!(!new);
    assert_eq!(stored.id, first.id, "the token keeps its device id");
    assert_eq!(stored.user_id, "bob");
    assert_eq!(stored.endpoint.as_deref(), Some("arn:endpoint/b1"));
    assert!(registry.for_user("alice").await.expect("alice").is_empty());
    assert_eq!(registry.for_user("bob").await.expect("bob").len(), 1);
}

pub async fn lists_a_users_active_devices(registry: Arc<dyn DeviceRegistry>) {
    let phone = Device::new("carol", Platform::Apns, "token-c1");
    let tablet = Device::new("carol", Platform::Fcm, "token-c2");
    let other = Device::new("dave", Platform::Fcm, "token-d1");
    for device in [&phone, &tablet, &other] {
        registry.register(device).await.expect("register");
    }
    let mut ids: Vec<String> = registry
        .for_user("carol")
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    ids.sort();
    let mut expected = vec![phone.id.clone(), tablet.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    assert!(registry.deactivate("token-c2").await.expect("deactivate"));
    assert!(!registry
        .deactivate("token-unknown")
        .await
        .expect("deactivate"));
    let active: Vec<String> = registry
        .for_user("carol")
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(active, vec![phone.id.clone()]);
    // Registering the token again brings the device back.
    registry
        .register(&Device::new("carol", Platform::Fcm, "token-c2"))
        .await
        .expect("register");
    assert_eq!(registry.for_user("carol").await.expect("list").len(), 2);
}

pub async fn removes_devices(registry: Arc<dyn DeviceRegistry>) {
    let device = Device::new("erin", Platform::Fcm, "token-e1");
    registry.register(&device).await.expect("register");
    assert!(registry.remove(&device.id).await.expect("remove"));
    assert!(!registry.remove(&device.id).await.expect("remove again"));
    assert_eq!(registry.by_token("token-e1").await.expect("by token"), None);
    assert!(registry.for_user("erin").await.expect("list").is_empty());
}

pub async fn finds_a_device_by_its_endpoint(registry: Arc<dyn DeviceRegistry>) {
    let mut device = Device::new("frank", Platform::Fcm, "token-f1");
    device.endpoint = Some("arn:endpoint/f1-old".into());
    registry.register(&device).await.expect("register");
    let found = registry
        .by_endpoint("arn:endpoint/f1-old")
        .await
        .expect("by endpoint");
    assert_eq!(found.map(|d| d.id), Some(device.id.clone()));
    // A new endpoint for the same token replaces the old one.
    let mut again = Device::new("frank", Platform::Fcm, "token-f1");
    again.endpoint = Some("arn:endpoint/f1-new".into());
    registry.register(&again).await.expect("register");
    assert_eq!(
        registry
            .by_endpoint("arn:endpoint/f1-old")
            .await
            .expect("by endpoint"),
        None
    );
    let found = registry
        .by_endpoint("arn:endpoint/f1-new")
        .await
        .expect("by endpoint");
    assert_eq!(found.map(|d| d.id), Some(device.id.clone()));
    assert!(registry.remove(&device.id).await.expect("remove"));
    assert_eq!(
        registry
            .by_endpoint("arn:endpoint/f1-new")
            .await
            .expect("by endpoint"),
        None
    );
    assert_eq!(
        registry
            .by_endpoint("arn:endpoint/none")
            .await
            .expect("by endpoint"),
        None
    );
}

/// A token another service registered is left as it is: the registry hands
/// its device back unchanged (the caller then answers that it is taken).
pub async fn a_token_another_service_registered_is_left_as_it_is(
    registry: Arc<dyn DeviceRegistry>,
) {
    let mut first = Device::new("alice", Platform::Fcm, "token-f1");
    first.service = Some("billing".into());
    registry.register(&first).await.expect("register");
    let mut other = Device::new("mallory", Platform::Apns, "token-f1");
    other.service = Some("shipping".into());
    other.endpoint = Some("arn:endpoint/f1".into());
    let (stored, new) = registry.register(&other).await.expect("register");
    assert!(!new);
    assert_eq!(stored, first, "handed back unchanged");
    assert_eq!(
        registry.by_token("token-f1").await.expect("by token"),
        Some(first.clone())
    );
    assert!(registry.for_user("mallory").await.expect("list").is_empty());
    assert_eq!(
        registry
            .by_endpoint("arn:endpoint/f1")
            .await
            .expect("by endpoint"),
        None
    );
    // Its own service updates it.
    let mut again = Device::new("alice2", Platform::Fcm, "token-f1");
    again.service = Some("billing".into());
    let (stored, new) = registry.register(&again).await.expect("register");
    assert!(!new);
    assert_eq!(
        (stored.id.as_str(), stored.user_id.as_str()),
        (first.id.as_str(), "alice2")
    );
}

/// Two services registering the same new token at once: one owns it, the
/// other is handed that device, unchanged.
pub async fn services_registering_one_token_at_once_leave_it_with_one(
    registry: Arc<dyn DeviceRegistry>,
) {
    for round in 0..100 {
        let token = format!("token-race-{round}");
        let mut a = Device::new("user-a", Platform::Fcm, &token);
        a.service = Some("a".into());
        let mut b = Device::new("user-b", Platform::Fcm, &token);
        b.service = Some("b".into());
        let (from_a, from_b) = tokio::join!(registry.register(&a), registry.register(&b));
        let (from_a, from_b) = (from_a.expect("register a"), from_b.expect("register b"));
        let (winner, loser) = match (from_a.1, from_b.1) {
            (true, false) => (&from_a.0, &from_b.0),
            (false, true) => (&from_b.0, &from_a.0),
            other => panic!("round {round}: one new device, got {other:?}"),
        };
        assert_eq!(
            loser, winner,
            "round {round}: the loser is handed the winner's device"
        );
        let stored = registry.by_token(&token).await.expect("by token");
        assert_eq!(stored.as_ref(), Some(winner), "round {round}");
        assert_eq!(
            winner.user_id,
            format!("user-{}", winner.service.as_deref().unwrap_or_default()),
            "round {round}: the owner's own user"
        );
    }
}

/// One service registering a new token twice at once (two users): one
/// registration makes the device, the other updates it; neither is lost.
pub async fn one_service_registering_a_token_twice_at_once_updates_it(
    registry: Arc<dyn DeviceRegistry>,
) {
    for round in 0..100 {
        let token = format!("token-same-{round}");
        let mut first = Device::new("user-1", Platform::Fcm, &token);
        first.service = Some("a".into());
        let mut second = Device::new("user-2", Platform::Fcm, &token);
        second.service = Some("a".into());
        let (one, two) = tokio::join!(registry.register(&first), registry.register(&second));
        let (one, two) = (one.expect("register"), two.expect("register"));
        assert!(
            one.1 != two.1,
            "round {round}: one new device, got {} and {}",
            one.1,
            two.1
        );
        assert_eq!(one.0.id, two.0.id, "round {round}: one device");
        // The registration that came second left its user on the device.
        let later = if one.1 { &two.0 } else { &one.0 };
        let stored = registry.by_token(&token).await.expect("by token");
        assert_eq!(
            stored.as_ref().map(|d| &d.user_id),
            Some(&later.user_id),
            "round {round}"
        );
    }
}

/// Expands to one test per case of the device registry contract.
#[macro_export]
macro_rules! devices_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            devices,
            $make,
            [
                registers_and_finds_devices,
                registering_a_known_token_updates_that_device,
                lists_a_users_active_devices,
                removes_devices,
                finds_a_device_by_its_endpoint,
                a_token_another_service_registered_is_left_as_it_is,
                services_registering_one_token_at_once_leave_it_with_one,
                one_service_registering_a_token_twice_at_once_updates_it,
            ]
        );
    };
}
