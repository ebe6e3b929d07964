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
            ]
        );
    };
}
