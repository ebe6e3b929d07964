use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mdc_core::message::PushTarget;
use mdc_core::ports::{Device, DeviceRegistry, Platform, Provider, ProviderError};
use mdc_core::{Content, Message, MessageType};
use mdc_embedded::{Embedded, QueueLayout};
use mdc_providers::sns::{SnsConfig, SnsPushProvider, SnsSmsProvider};
use serde_json::Value;

use crate::services::{aws, env};

fn config(applications: BTreeMap<Platform, String>) -> SnsConfig {
    SnsConfig {
        aws: aws(),
        platform_applications: applications,
        delivery_status_log_group: None,
        delivery_status_interval: std::time::Duration::from_secs(30),
    }
}

async fn sdk() -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(
        &config(BTreeMap::new())
            .aws
            .sdk_config("sns-test")
            .await
            .expect("sdk"),
    )
}

async fn application(client: &aws_sdk_sns::Client, platform: &str) -> String {
    client
        .create_platform_application()
        .name(format!("mdc-test-{platform}-{}", ulid::Ulid::new()))
        .platform(platform)
        .set_attributes(Some(HashMap::from([(
            "PlatformCredential".to_owned(),
            "credential".to_owned(),
        )])))
        .send()
        .await
        .expect("platform application")
        .platform_application_arn()
        .expect("arn")
        .to_owned()
}

fn registry() -> Arc<dyn DeviceRegistry> {
    let dir = tempfile::tempdir().expect("tempdir");
    Embedded::open(dir.path(), QueueLayout::default())
        .expect("open")
        .devices
}

async fn moto_data() -> Value {
    let url = format!("{}/moto-api/data.json", env("MDC_TEST_MOTO_URL"));
    reqwest::get(url)
        .await
        .expect("moto api")
        .json()
        .await
        .expect("json")
}

fn push(target: PushTarget) -> Message {
    let mut message = mdc_core::contract::sample_message("unused");
    let mut data = serde_json::Map::new();
    data.insert("order".into(), Value::from(42));
    message.content = Content::Push {
        target,
        title: Some("Shipped".into()),
        body: format!("Order shipped ({})", message.id),
        data,
    };
    message
}

#[tokio::test]
async fn publishes_sms_with_type_and_sender() {
    let sns = SnsSmsProvider::new("sns-sms", &config(BTreeMap::new()))
        .await
        .expect("provider");
    let mut message = mdc_core::contract::sample_message("+14155550123");
    message.message_type = MessageType::Marketing;
    message.sender = Some("SHOP".into());
    let receipt = sns.send(&message).await.expect("published");
    assert!(!receipt.provider_message_id.is_empty());
    let data = moto_data().await.to_string();
    assert!(
        data.contains(&receipt.provider_message_id),
        "moto did not record the SMS"
    );
}

#[tokio::test]
async fn pushes_to_a_token_and_a_disabled_endpoint_fails_permanently_and_deactivates_the_device() {
    let client = sdk().await;
    let fcm = application(&client, "GCM").await;
    let devices = registry();
    let sns = SnsPushProvider::new(
        "sns-push",
        &config(BTreeMap::from([(Platform::Fcm, fcm)])),
        devices.clone(),
    )
    .await
    .expect("provider");
    let endpoint = sns
        .endpoint(Platform::Fcm, "fcm-token-0001")
        .await
        .expect("endpoint");
    let mut device = Device::new("alice", Platform::Fcm, "fcm-token-0001");
    device.endpoint = Some(endpoint.clone());
    devices.register(&device).await.expect("register");
    assert_eq!(
        sns.endpoint(Platform::Fcm, "fcm-token-0001")
            .await
            .expect("endpoint"),
        endpoint,
        "idempotent per token"
    );

    let receipt = sns
        .send(&push(PushTarget::DeviceToken("fcm-token-0001".into())))
        .await
        .expect("published");
    assert!(!receipt.provider_message_id.is_empty());

    client
        .set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .expect("disable");
    match sns
        .send(&push(PushTarget::DeviceToken("fcm-token-0001".into())))
        .await
    {
        Err(ProviderError::Permanent { code, .. }) => assert_eq!(code, "EndpointDisabled"),
        other => panic!("expected a permanent EndpointDisabled, got {other:?}"),
    }
    let device = devices
        .by_token("fcm-token-0001")
        .await
        .expect("lookup")
        .expect("device");
    assert!(!device.active, "the disabled device is deactivated");
    assert!(devices.for_user("alice").await.expect("list").is_empty());
}

/// An ARN given as a device token could be any topic the role may publish
/// to: it is refused without a publish.
#[tokio::test]
async fn an_arn_is_not_a_push_target() {
    let client = sdk().await;
    let fcm = application(&client, "GCM").await;
    let topic = client
        .create_topic()
        .name(format!("any-topic-{}", ulid::Ulid::new()))
        .send()
        .await
        .expect("topic")
        .topic_arn()
        .expect("arn")
        .to_owned();
    let sns = SnsPushProvider::new(
        "sns-push",
        &config(BTreeMap::from([(Platform::Fcm, fcm)])),
        registry(),
    )
    .await
    .expect("provider");
    match sns.send(&push(PushTarget::DeviceToken(topic))).await {
        Err(ProviderError::Permanent { code, .. }) => assert_eq!(code, "ARN_TARGET"),
        other => panic!("an ARN target must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_user_target_fans_out_to_every_active_device() {
    let client = sdk().await;
    let fcm = application(&client, "GCM").await;
    let apns = application(&client, "APNS").await;
    let devices = registry();
    let applications = BTreeMap::from([(Platform::Fcm, fcm), (Platform::Apns, apns)]);
    let sns = SnsPushProvider::new("sns-push", &config(applications), devices.clone())
        .await
        .expect("provider");
    for (platform, token) in [
        (Platform::Fcm, "fcm-token-bob"),
        (Platform::Apns, "a1b2c3d4e5f60718293a4b5c6d7e8f90"),
    ] {
        devices
            .register(&Device::new("bob", platform, token))
            .await
            .expect("register");
    }
    let receipt = sns
        .send(&push(PushTarget::UserId("bob".into())))
        .await
        .expect("published");
    let sent = receipt.raw["devices"]
        .as_array()
        .expect("per-device report");
    assert_eq!(sent.len(), 2, "{}", receipt.raw);
    assert!(
        sent.iter().all(|d| d["MessageId"].is_string()),
        "{}",
        receipt.raw
    );

    match sns.send(&push(PushTarget::UserId("nobody".into()))).await {
        Err(ProviderError::Permanent { code, .. }) => assert_eq!(code, "NO_DEVICES"),
        other => panic!("expected NO_DEVICES, got {other:?}"),
    }
}

#[tokio::test]
async fn push_config_needs_a_platform_application() {
    let err = SnsPushProvider::new("sns-push", &config(BTreeMap::new()), registry())
        .await
        .err()
        .expect("invalid");
    assert!(
        err.to_string()
            .contains("providers.sns-push.platform_applications"),
        "{err}"
    );
}
