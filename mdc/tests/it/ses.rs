//! SES end to end on moto: MDC sends through SES v2, the test publishes
//! real-format SES events for that message's SES id to the SNS topic that
//! moto delivers to the SQS queue MDC polls, and the message follows.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};

use crate::harness::{email, free_port, Server};

const WITHIN: Duration = Duration::from_secs(30);

pub(crate) fn moto() -> String {
    std::env::var("MDC_TEST_MOTO_URL")
        .expect("MDC_TEST_MOTO_URL: run the tests with ./scripts/test")
}

pub(crate) async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// The event destination: an SNS topic delivering to an SQS queue.
async fn event_destination(sdk: &aws_config::SdkConfig) -> (String, String) {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let sns = aws_sdk_sns::Client::new(sdk);
    let name = format!("mdc-ses-{}", ulid::Ulid::new());
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    let topic = sns
        .create_topic()
        .name(&name)
        .send()
        .await
        .expect("topic")
        .topic_arn()
        .expect("arn")
        .to_owned();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(arn)
        .send()
        .await
        .expect("subscribe");
    (url, topic)
}

async fn publish_event(sdk: &aws_config::SdkConfig, topic: &str, message: &Value, event: Value) {
    let mut body = json!({
        "mail": {
            "timestamp": "2026-11-30T10:00:00.000Z",
            "messageId": message["provider_message_id"],
            "destination": [message["to"]],
            "tags": { "mdc_message_id": [message["id"]] }
        }
    });
    if let (Some(body), Some(event)) = (body.as_object_mut(), event.as_object()) {
        body.extend(event.clone());
    }
    aws_sdk_sns::Client::new(sdk)
        .publish()
        .topic_arn(topic)
        .message(body.to_string())
        .send()
        .await
        .expect("publish");
}

#[tokio::test]
async fn ses_events_move_messages_and_a_hard_bounce_suppresses_the_address() {
    let sdk = sdk().await;
    aws_sdk_sesv2::Client::new(&sdk)
        .create_email_identity()
        .email_identity("noreply@example.com")
        .send()
        .await
        .expect("verify the sender");
    let (queue_url, topic) = event_destination(&sdk).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
[dispatcher]
send_timeout = "5s"
lease = "10s"

[providers.ses]
kind = "ses"
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id_env = "MDC_TEST_AWS_KEY"
secret_access_key_env = "MDC_TEST_AWS_SECRET"
timeout = "5s"
events_queue_url = "{queue_url}"

[routes.email]
members = [{{ provider = "ses" }}]
"#,
        moto = moto()
    );
    let server = Server::start_on(dir.path(), &config, free_port(), &[]).await;

    let delivered = server.submit(&email("alice@example.com")).await;
    let message = server.wait_status(&delivered, "sent", WITHIN).await;
    assert_eq!(message["provider"], "ses");
    publish_event(
        &sdk,
        &topic,
        &message,
        json!({"eventType": "Delivery", "delivery": {"timestamp": "2026-11-30T10:00:01.000Z"}}),
    )
    .await;
    server.wait_status(&delivered, "delivered", WITHIN).await;

    let bounced = server.submit(&email("bob@example.com")).await;
    let message = server.wait_status(&bounced, "sent", WITHIN).await;
    publish_event(
        &sdk,
        &topic,
        &message,
        json!({"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail",
            "bouncedRecipients": [{"emailAddress": "bob@example.com", "diagnosticCode": "smtp; 550 5.1.1 unknown"}]}}),
    )
    .await;
    let failed = server.wait_status(&bounced, "failed", WITHIN).await;
    assert!(
        failed.to_string().contains("bounce Permanent/NoEmail"),
        "{failed:#}"
    );
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (status, _) = server
            .get("/v1/suppressions?channel=email&to=bob@example.com")
            .await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob was never suppressed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = server.post(&email("bob@example.com")).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["rule"], "suppressed");

    // Counted by the intake just after each hand-over.
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (_, health) = server.get("/healthz").await;
        if health["intakes"]["ses"]["accepted"].as_u64() >= Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SES events delivered by an HTTPS subscription: signed, verified against
/// the certificate (served on loopback, trusted through the test-only
/// setting), and only from the provider's topic.
#[tokio::test]
async fn signed_ses_events_over_https_move_the_message_and_forged_ones_do_not() {
    use mdc_response_listener::sns::testing::{body, notification, sign, FakeSns};

    let sdk = sdk().await;
    aws_sdk_sesv2::Client::new(&sdk)
        .create_email_identity()
        .email_identity("noreply@example.com")
        .send()
        .await
        .expect("verify the sender");
    let fake = FakeSns::start().expect("fake SNS");
    let topic = "arn:aws:sns:us-east-1:123456789012:ses-events-https";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
[callbacks]
insecure_sns_loopback_urls = true

[providers.ses]
kind = "ses"
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id_env = "MDC_TEST_AWS_KEY"
secret_access_key_env = "MDC_TEST_AWS_SECRET"
timeout = "5s"
events_topic_arns = ["{topic}"]

[routes.email]
members = [{{ provider = "ses" }}]
"#,
        moto = moto()
    );
    let server = Server::start_on(dir.path(), &config, free_port(), &[]).await;
    let id = server.submit(&email("carol@example.com")).await;
    let message = server.wait_status(&id, "sent", WITHIN).await;
    let event = json!({
        "eventType": "Delivery",
        "mail": {"timestamp": "2026-11-30T10:00:00.000Z", "messageId": message["provider_message_id"],
                 "destination": ["carol@example.com"]},
        "delivery": {"timestamp": "2026-11-30T10:00:01.000Z"}
    })
    .to_string();
    let post = |message: mdc_response_listener::sns::verify::SnsMessage| {
        let request = server
            .http
            .post(format!("{}/v1/callbacks/sns/ses", server.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .body(body(&message));
        async move { request.send().await.expect("post").status().as_u16() }
    };

    let mut forged = notification(topic, &event, &fake.cert_url());
    sign(&mut forged, 2);
    forged.message = forged.message.replace("Delivery", "Bounce");
    assert_eq!(post(forged).await, 403);
    let mut authentic = notification(topic, &event, &fake.cert_url());
    sign(&mut authentic, 1);
    assert_eq!(post(authentic).await, 200);
    let delivered = server.wait_status(&id, "delivered", WITHIN).await;
    assert!(
        !delivered.to_string().contains("Bounce"),
        "the forged event left no trace: {delivered:#}"
    );
    let (_, health) = server.get("/healthz").await;
    assert_eq!(health["intakes"]["sns"]["refused"], 1, "{health}");
    fake.stop().await;
}
