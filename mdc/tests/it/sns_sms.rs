//! SNS SMS on moto: MDC publishes through SNS, the test writes SNS's
//! delivery-status records for those messages into moto's CloudWatch Logs,
//! and the listener role reads them back.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use serde_json::json;

use crate::harness::{free_port, sms, Server};
use crate::ses::{moto, sdk};

const WITHIN: Duration = Duration::from_secs(30);

async fn write(logs: &aws_sdk_cloudwatchlogs::Client, group: &str, record: String) {
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name("stream")
        .log_events(
            InputLogEvent::builder()
                .timestamp(chrono::Utc::now().timestamp_millis())
                .message(record)
                .build()
                .expect("event"),
        )
        .send()
        .await
        .expect("put");
}

fn record(sns_id: &str, to: &str, status: &str, response: &str) -> String {
    json!({
        "notification": {"messageId": sns_id, "timestamp": "2026-12-01 10:00:01.558"},
        "delivery": {"destination": to, "providerResponse": response, "smsType": "Transactional"},
        "status": status
    })
    .to_string()
}

#[tokio::test]
async fn delivery_status_logs_move_sms_and_an_opt_out_suppresses_the_number() {
    let sdk = sdk().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let group = format!(
        "sns/us-east-1/{}/DirectPublishToPhoneNumber",
        ulid::Ulid::new()
    );
    for name in [group.clone(), format!("{group}/Failure")] {
        logs.create_log_group()
            .log_group_name(&name)
            .send()
            .await
            .expect("group");
        logs.create_log_stream()
            .log_group_name(&name)
            .log_stream_name("stream")
            .send()
            .await
            .expect("stream");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
[providers.sns-sms]
kind = "sns_sms"
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id_env = "MDC_TEST_AWS_KEY"
secret_access_key_env = "MDC_TEST_AWS_SECRET"
timeout = "5s"
delivery_status_log_group = "{group}"
delivery_status_interval = "200ms"

[routes.sms]
members = [{{ provider = "sns-sms" }}]
"#,
        moto = moto()
    );
    let server = Server::start_on(dir.path(), &config, free_port(), &[]).await;
    let delivered = server.submit(&sms("+14155550131")).await;
    let opted_out = server.submit(&sms("+14155550132")).await;
    let delivered_message = server.wait_status(&delivered, "sent", WITHIN).await;
    let opted_out_message = server.wait_status(&opted_out, "sent", WITHIN).await;
    assert_eq!(delivered_message["provider"], "sns-sms");

    write(
        &logs,
        &group,
        record(
            delivered_message["provider_message_id"]
                .as_str()
                .expect("id"),
            "+14155550131",
            "SUCCESS",
            "Message has been accepted by phone carrier",
        ),
    )
    .await;
    write(
        &logs,
        &format!("{group}/Failure"),
        record(
            opted_out_message["provider_message_id"]
                .as_str()
                .expect("id"),
            "+14155550132",
            "FAILURE",
            "Phone number is opted out",
        ),
    )
    .await;
    server.wait_status(&delivered, "delivered", WITHIN).await;
    let failed = server.wait_status(&opted_out, "failed", WITHIN).await;
    assert!(
        failed.to_string().contains("Phone number is opted out"),
        "{failed:#}"
    );
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (status, _) = server
            .get("/v1/suppressions?channel=sms&to=%2B14155550132")
            .await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the number was never suppressed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = server.post(&sms("+14155550132")).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["rule"], "suppressed");
}
