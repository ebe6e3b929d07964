use mdc_core::message::Attachment;
use mdc_core::ports::{Provider, ProviderError};
use mdc_core::{Content, Message};
use mdc_providers::ses::{SesConfig, SesProvider};
use serde_json::Value;

use crate::services::{aws, env};

fn config() -> SesConfig {
    SesConfig {
        aws: aws(),
        configuration_set: None,
        events_queue_url: None,
    }
}

async fn verified(sender: &str) -> SesProvider {
    let config = config();
    let sdk = config.aws.sdk_config("ses-test").await.expect("sdk config");
    aws_sdk_sesv2::Client::new(&sdk)
        .create_email_identity()
        .email_identity(sender)
        .send()
        .await
        .expect("verify sender");
    SesProvider::new("ses-test", &config)
        .await
        .expect("provider")
}

fn email(
    from: &str,
    to: &str,
    text: Option<&str>,
    html: Option<&str>,
    attachments: Vec<Attachment>,
) -> Message {
    let mut message = mdc_core::contract::sample_message(to);
    message.content = Content::Email {
        from: from.into(),
        subject: format!("Receipt {}", message.id),
        text: text.map(str::to_owned),
        html: html.map(str::to_owned),
        attachments,
    };
    message
}

/// What moto recorded as sent through SES.
async fn sent_by_moto() -> Value {
    let url = format!("{}/moto-api/data.json", env("MDC_TEST_MOTO_URL"));
    reqwest::get(url)
        .await
        .expect("moto api")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn sends_text_html_and_raw_email_through_the_sdk() {
    let ses = verified("billing@example.com").await;
    let plain = email(
        "billing@example.com",
        "alice@example.com",
        Some("Thanks"),
        None,
        Vec::new(),
    );
    let both = email(
        "billing@example.com",
        "bob@example.com",
        Some("Thanks"),
        Some("<p>Thanks</p>"),
        Vec::new(),
    );
    let raw = email(
        "billing@example.com",
        "carol@example.com",
        Some("Invoice attached"),
        None,
        vec![Attachment {
            filename: "invoice.txt".into(),
            content_type: "text/plain".into(),
            content_base64: "SW52b2ljZSAjNDI=".into(),
        }],
    );
    let mut ids = Vec::new();
    for message in [&plain, &both, &raw] {
        let receipt = ses.send(message).await.expect("sent");
        assert!(!receipt.provider_message_id.is_empty());
        assert_eq!(
            receipt.raw["MessageId"],
            receipt.provider_message_id.as_str()
        );
        ids.push(receipt.provider_message_id);
    }
    let data = sent_by_moto().await.to_string();
    for (message, id) in [&plain, &both, &raw].iter().zip(&ids) {
        assert!(data.contains(id.as_str()), "moto did not record {id}");
        assert!(
            data.contains(message.id.as_str()),
            "subject or raw body of {} missing",
            message.id
        );
    }
    assert!(
        data.contains("invoice.txt"),
        "the raw message carries the attachment"
    );
}

#[tokio::test]
async fn an_unverified_sender_is_a_permanent_error() {
    let ses = SesProvider::new("ses-test", &config())
        .await
        .expect("provider");
    let message = email(
        "stranger@unverified.example",
        "alice@example.com",
        Some("hi"),
        None,
        Vec::new(),
    );
    match ses.send(&message).await {
        Err(ProviderError::Permanent { code, .. }) => assert_eq!(code, "MessageRejected"),
        other => panic!("expected a permanent rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = config();
    config.aws.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    let ses = SesProvider::new("ses-test", &config)
        .await
        .expect("provider");
    let message = email(
        "billing@example.com",
        "alice@example.com",
        Some("hi"),
        None,
        Vec::new(),
    );
    match ses.send(&message).await {
        Err(ProviderError::Transient { .. }) => {}
        other => panic!("expected a transient error, got {other:?}"),
    }
}
