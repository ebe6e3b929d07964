//! The SNS SMS delivery-status intake against moto's CloudWatch Logs:
//! records written in SNS's documented format become reports, and the
//! checkpoint (embedded, reopened as after a restart) neither loses nor
//! replays any.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use mdc_core::memory::MemoryQueue;
use mdc_core::ports::{Checkpoints, ReportSink};
use mdc_core::ReportOutcome;
use mdc_response_listener::sns_sms_logs::SnsSmsLogsIntake;
use mdc_response_listener::{Intake, QueueReportSink};
use serde_json::json;

use crate::queued;
use crate::ses_sqs::sdk;

struct Logs {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
}

impl Logs {
    /// The two delivery-status groups of a fresh account id, each with a stream.
    async fn create(sdk: &aws_config::SdkConfig) -> Logs {
        let client = aws_sdk_cloudwatchlogs::Client::new(sdk);
        let group = format!(
            "sns/us-east-1/{}/DirectPublishToPhoneNumber",
            ulid::Ulid::new()
        );
        for name in [group.clone(), format!("{group}/Failure")] {
            client
                .create_log_group()
                .log_group_name(&name)
                .send()
                .await
                .expect("group");
            client
                .create_log_stream()
                .log_group_name(&name)
                .log_stream_name("stream")
                .send()
                .await
                .expect("stream");
        }
        Logs { client, group }
    }

    /// Writes one record to the success or the failure group.
    async fn write(&self, failure: bool, record: String) {
        let group = if failure {
            format!("{}/Failure", self.group)
        } else {
            self.group.clone()
        };
        self.client
            .put_log_events()
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
}

fn record(sns_id: &str, status: &str, response: &str) -> String {
    json!({
        "notification": {"messageId": sns_id, "timestamp": "2026-12-01 10:00:01.558"},
        "delivery": {"destination": "+14155550123", "providerResponse": response,
                     "smsType": "Transactional", "priceInUSD": 0.00645, "dwellTimeMs": 599},
        "status": status
    })
    .to_string()
}

fn intake(
    logs: &Logs,
    sdk: &aws_config::SdkConfig,
    queue: &Arc<MemoryQueue>,
    checkpoints: Arc<dyn Checkpoints>,
) -> SnsSmsLogsIntake {
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
    SnsSmsLogsIntake::new(
        "sns-sms",
        &logs.group,
        sdk,
        sink,
        checkpoints,
        Duration::from_secs(1),
    )
}

/// One pass over both groups; the reports handed on.
async fn pass(intake: &SnsSmsLogsIntake, logs: &Logs) -> usize {
    let mut handed = 0;
    for group in [logs.group.clone(), format!("{}/Failure", logs.group)] {
        handed += intake.pass(&group).await.expect("pass");
    }
    handed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_records_become_reports_once_across_a_restart() {
    let sdk = sdk().await;
    let logs = Logs::create(&sdk).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(MemoryQueue::default());

    logs.write(
        false,
        record(
            "sns-a",
            "SUCCESS",
            "Message has been accepted by phone carrier",
        ),
    )
    .await;
    logs.write(true, "not a record".into()).await;
    logs.write(
        true,
        record("sns-b", "FAILURE", "Phone number is opted out"),
    )
    .await;
    {
        let checkpoints = mdc_embedded::open_stores(dir.path())
            .expect("stores")
            .checkpoints;
        let intake = intake(&logs, &sdk, &queue, checkpoints);
        assert_eq!(pass(&intake, &logs).await, 2);
        assert_eq!(
            pass(&intake, &logs).await,
            0,
            "a second pass reads nothing new"
        );
        assert_eq!(
            intake.counts().snapshot(),
            json!({"accepted": 2, "ignored": 0, "refused": 1}),
            "the unreadable record is counted and does not stop the rest"
        );
    }
    // A restart: the checkpoint is read back from disk.
    let checkpoints = mdc_embedded::open_stores(dir.path())
        .expect("stores again")
        .checkpoints;
    let restarted = intake(&logs, &sdk, &queue, checkpoints);
    logs.write(false, record("sns-c", "SUCCESS", "accepted"))
        .await;
    assert_eq!(
        pass(&restarted, &logs).await,
        1,
        "only the record written since"
    );
    let reports = queued(&queue).await;
    let outcomes: Vec<(&str, &ReportOutcome)> = reports
        .iter()
        .map(|r| (r.provider_message_id.as_str(), &r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("sns-a", &ReportOutcome::Delivered),
            (
                "sns-b",
                &ReportOutcome::Failed {
                    reason: "SNS: Phone number is opted out".into(),
                    suppress: true
                }
            ),
            ("sns-c", &ReportOutcome::Delivered),
        ],
        "each record once, nothing replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_queued_is_read_again_and_a_missing_group_is_no_error() {
    let sdk = sdk().await;
    let logs = Logs::create(&sdk).await;
    let queue = Arc::new(MemoryQueue::default());
    let checkpoints: Arc<dyn Checkpoints> =
        Arc::new(mdc_core::memory::MemoryCheckpoints::default());
    let intake = intake(&logs, &sdk, &queue, checkpoints);
    logs.write(false, record("sns-d", "SUCCESS", "accepted"))
        .await;
    queue.set_down(true);
    assert!(intake.pass(&logs.group).await.is_err());
    queue.set_down(false);
    assert_eq!(intake.pass(&logs.group).await.expect("pass"), 1);
    assert_eq!(queued(&queue).await.len(), 1);
    assert_eq!(
        intake
            .pass("sns/us-east-1/000000000000/NoSuchGroup")
            .await
            .expect("a group SNS has not created yet"),
        0
    );
}
