//! The SES intake against moto: real-format SES events published to an SNS
//! topic, which moto delivers to the SQS queue the intake polls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use mdc_core::memory::MemoryQueue;
use mdc_core::ports::{ConsumerSpec, Queue, QueueConsumer, ReportSink, Topic};
use mdc_core::{DeliveryReport, ReportOutcome};
use mdc_response_listener::ses_sqs::SesSqsIntake;
use mdc_response_listener::{Intake, QueueReportSink};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub(crate) async fn sdk() -> aws_config::SdkConfig {
    let moto = std::env::var("MDC_TEST_MOTO_URL")
        .expect("MDC_TEST_MOTO_URL: run the tests with ./scripts/test");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// A queue (1 s visibility timeout) subscribed to a new topic.
async fn queue_behind_topic(sdk: &aws_config::SdkConfig) -> (String, String) {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let sns = aws_sdk_sns::Client::new(sdk);
    let name = format!("ses-events-{}", ulid::Ulid::new());
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes");
    let queue_arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .expect("arn")
        .clone();
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
        .endpoint(queue_arn)
        .send()
        .await
        .expect("subscribe");
    (url, topic)
}

fn event(kind: &str, ses_id: &str, extra: serde_json::Value) -> String {
    let mut event = json!({
        "eventType": kind,
        "mail": {
            "timestamp": "2026-11-30T10:00:00.000Z",
            "messageId": ses_id,
            "destination": ["alice@example.com"],
            "tags": { "mdc_message_id": ["msg_01KAAAAAAAAAAAAAAAAAAAAAAA"] }
        }
    });
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        event.extend(extra.clone());
    }
    event.to_string()
}

async fn publish(sdk: &aws_config::SdkConfig, topic: &str, message: &str) {
    aws_sdk_sns::Client::new(sdk)
        .publish()
        .topic_arn(topic)
        .message(message)
        .send()
        .await
        .expect("publish");
}

async fn next_reports(consumer: &Arc<dyn QueueConsumer>, n: usize) -> Vec<DeliveryReport> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} reports",
            out.len()
        );
        for delivery in consumer.fetch(10).await.expect("fetch") {
            out.push(serde_json::from_slice(&delivery.payload).expect("report"));
            consumer.ack(&delivery).await.expect("ack");
        }
    }
    out
}

async fn messages_in(sdk: &aws_config::SdkConfig, url: &str) -> u64 {
    let attributes = aws_sdk_sqs::Client::new(sdk)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("attributes");
    let map = attributes.attributes().cloned().unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .filter_map(|k| map.get(k).and_then(|v| v.parse::<u64>().ok()))
    .sum()
}

/// Messages received and not yet deleted or visible again.
async fn in_flight(sdk: &aws_config::SdkConfig, url: &str) -> u64 {
    aws_sdk_sqs::Client::new(sdk)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| {
            a.get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_events_through_sns_and_sqs_become_reports_and_leave_the_queue() {
    let sdk = sdk().await;
    let (url, topic) = queue_behind_topic(&sdk).await;
    let queue = Arc::new(MemoryQueue::default());
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
    let intake = Arc::new(SesSqsIntake::new(
        "ses-test",
        &url,
        &sdk,
        sink,
        2,
        Duration::from_secs(1),
    ));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(intake.clone().run(shutdown.clone()));
    let consumer = queue
        .consumer(Topic::Responses, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");

    publish(&sdk, &topic, "this is not an SES event").await;
    publish(
        &sdk,
        &topic,
        &event(
            "Delivery",
            "ses-1",
            json!({"delivery": {"timestamp": "2026-11-30T10:00:01.000Z"}}),
        ),
    )
    .await;
    publish(
        &sdk,
        &topic,
        &event(
            "Bounce",
            "ses-2",
            json!({"bounce": {"bounceType": "Permanent", "bounceSubType": "General"}}),
        ),
    )
    .await;
    let mut reports = next_reports(&consumer, 2).await;
    reports.sort_by(|a, b| a.provider_message_id.cmp(&b.provider_message_id));
    assert_eq!(reports[0].provider, "ses-test");
    assert_eq!(reports[0].provider_message_id, "ses-1");
    assert_eq!(reports[0].outcome, ReportOutcome::Delivered);
    assert_eq!(
        reports[0].reference.as_ref().map(|r| r.as_str()),
        Some("msg_01KAAAAAAAAAAAAAAAAAAAAAAA")
    );
    assert!(matches!(
        reports[1].outcome,
        ReportOutcome::Failed { suppress: true, .. }
    ));

    // The unreadable message stays for the redrive policy; the others are
    // gone from the queue.
    let deadline = Instant::now() + Duration::from_secs(20);
    while intake.counts().snapshot()["refused"].as_u64() < Some(1) {
        assert!(Instant::now() < deadline, "the bad message was never read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deletes follow the hand-over: wait for them.
    let mut left = messages_in(&sdk, &url).await;
    while left != 1 {
        assert!(
            Instant::now() < deadline,
            "{left} messages left, not just the unreadable one"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = messages_in(&sdk, &url).await;
    }

    // While the responses topic is down, an event is not deleted: it comes
    // back after the visibility timeout and is handed on once it is up.
    queue.set_down(true);
    publish(
        &sdk,
        &topic,
        &event("Delivery", "ses-3", json!({"delivery": {}})),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    queue.set_down(false);
    let late = next_reports(&consumer, 1).await;
    assert_eq!(late[0].provider_message_id, "ses-3");
    // Counted just after the hand-over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while intake.counts().snapshot()["accepted"].as_u64() < Some(3) {
        assert!(Instant::now() < deadline, "{}", intake.counts().snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.cancel();
    running.await.expect("join").expect("run");
}

/// An intake that stops mid-batch (its reports not yet durable, so nothing
/// deleted) loses nothing: the next one reads every event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_batch_loses_no_report() {
    let sdk = sdk().await;
    let (url, topic) = queue_behind_topic(&sdk).await;
    let queue = Arc::new(MemoryQueue::default());
    let start = || {
        let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
        let intake = Arc::new(SesSqsIntake::new(
            "ses-test",
            &url,
            &sdk,
            sink,
            2,
            Duration::from_secs(1),
        ));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(intake.clone().run(shutdown.clone()));
        (intake, shutdown, running)
    };
    for n in 0..10 {
        publish(
            &sdk,
            &topic,
            &event("Delivery", &format!("ses-r{n}"), json!({"delivery": {}})),
        )
        .await;
    }
    // The first intake reads the batch but cannot make its reports durable.
    queue.set_down(true);
    let (first, shutdown, running) = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(&sdk, &url).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the intake never received the batch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    running.await.expect("join").expect("run");
    assert_eq!(first.counts().snapshot()["accepted"], 0);
    assert_eq!(messages_in(&sdk, &url).await, 10, "nothing was deleted");

    queue.set_down(false);
    let (_second, shutdown, running) = start();
    let consumer = queue
        .consumer(Topic::Responses, ConsumerSpec { index: 0, count: 1 })
        .await
        .expect("consumer");
    let mut ids: Vec<String> = next_reports(&consumer, 10)
        .await
        .into_iter()
        .map(|r| r.provider_message_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "{ids:?}");
    shutdown.cancel();
    running.await.expect("join").expect("run");
}
