use std::collections::HashMap;
use std::time::Duration;

use mdc_core::message::PushTarget;
use mdc_core::ports::{Provider, ProviderError};
use mdc_core::{Content, Message, MessageType};
use mdc_providers::aws::AwsConfig;
use mdc_providers::sns::{Platform, SnsConfig, SnsPushProvider, SnsSmsProvider};
use serde_json::Value;

use crate::services::{aws_credentials, env};

fn config(application: Option<String>) -> SnsConfig {
    aws_credentials();
    SnsConfig {
        aws: AwsConfig {
            region: "us-east-1".into(),
            endpoint_url: Some(env("MDC_TEST_MOTO_URL")),
            access_key_id_env: Some("MDC_TEST_AWS_KEY".into()),
            secret_access_key_env: Some("MDC_TEST_AWS_SECRET".into()),
            timeout: Duration::from_secs(10),
        },
        platform_application_arn: application,
        platform: Some(Platform::Fcm),
    }
}

async fn sdk() -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(&config(None).aws.sdk_config("sns-test").await.expect("sdk"))
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

fn push(token: &str) -> Message {
    let mut message = mdc_core::contract::sample_message("unused");
    message.to = token.to_owned();
    let mut data = serde_json::Map::new();
    data.insert("order".into(), Value::from(42));
    message.content = Content::Push {
        target: PushTarget::DeviceToken(token.to_owned()),
        title: Some("Shipped".into()),
        body: format!("Order shipped ({})", message.id),
        data,
    };
    message
}

#[tokio::test]
async fn publishes_sms_with_type_and_sender() {
    let sns = SnsSmsProvider::new("sns-sms", &config(None))
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
async fn pushes_to_a_device_token_and_fails_permanently_on_a_disabled_endpoint() {
    let client = sdk().await;
    let application = client
        .create_platform_application()
        .name(format!("mdc-test-{}", std::process::id()))
        .platform("GCM")
        .set_attributes(Some(HashMap::from([(
            "PlatformCredential".to_owned(),
            "fcm-server-key".to_owned(),
        )])))
        .send()
        .await
        .expect("platform application")
        .platform_application_arn()
        .expect("arn")
        .to_owned();
    let sns = SnsPushProvider::new("sns-push", &config(Some(application.clone())))
        .await
        .expect("provider");

    let message = push("fcm-token-0001");
    let receipt = sns.send(&message).await.expect("published");
    assert!(!receipt.provider_message_id.is_empty());
    let endpoint = receipt.raw["EndpointArn"]
        .as_str()
        .expect("endpoint")
        .to_owned();
    // The same token maps to the same endpoint.
    assert_eq!(
        sns.endpoint("fcm-token-0001").await.expect("endpoint"),
        endpoint
    );

    client
        .set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .expect("disable endpoint");
    match sns.send(&push("fcm-token-0001")).await {
        Err(ProviderError::Permanent { code, .. }) => assert_eq!(code, "EndpointDisabled"),
        other => panic!("expected a permanent EndpointDisabled, got {other:?}"),
    }
}

#[tokio::test]
async fn push_config_must_name_the_application_and_platform() {
    let mut config = config(None);
    let err = SnsPushProvider::new("sns-push", &config)
        .await
        .err()
        .expect("missing application");
    assert!(
        err.to_string()
            .contains("providers.sns-push.platform_application_arn"),
        "{err}"
    );
    config.platform_application_arn = Some("arn:aws:sns:us-east-1:123456789012:app/GCM/x".into());
    config.platform = None;
    let err = SnsPushProvider::new("sns-push", &config)
        .await
        .err()
        .expect("missing platform");
    assert!(err.to_string().contains("platform"), "{err}");
}
