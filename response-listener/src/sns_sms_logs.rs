//! SNS SMS delivery status: SNS writes it only to CloudWatch Logs, in the
//! log groups `sns/<region>/<account>/DirectPublishToPhoneNumber` and
//! `…/DirectPublishToPhoneNumber/Failure`. The intake reads both with
//! `FilterLogEvents` and hands each record to the responses topic.
//!
//! | record | MDC |
//! |---|---|
//! | `status` SUCCESS | `delivered` |
//! | `status` FAILURE | `failed` with the `providerResponse`; "opted out" also suppresses the number |
//!
//! Its place in each group is a checkpoint ([`Checkpoints`]), saved after
//! every page once the page's reports are durable: the newest event time
//! read, and the ids of events read within [`OVERLAP`] of it. Each pass reads
//! from that time minus [`OVERLAP`] (CloudWatch may ingest an event after a
//! later one) and skips ids it has seen, so a restart neither loses nor
//! replays a report. Without a checkpoint, reading starts [`FIRST_LOOKBACK`]
//! back. A record that cannot be read is counted and logged without its body
//! (it holds the phone number) and skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use mdc_core::ports::{Checkpoints, ReportSink};
use mdc_core::{DeliveryReport, ReportOutcome, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Intake, IntakeCounts};

/// How far back a pass re-reads, for events CloudWatch ingests late.
pub const OVERLAP: Duration = Duration::from_secs(60);
/// Where reading starts without a checkpoint.
pub const FIRST_LOOKBACK: Duration = Duration::from_secs(3600);
/// Events per `FilterLogEvents` page.
const PAGE: i32 = 1000;
/// Pages per pass at most; the next pass goes on from the checkpoint.
const PAGES_PER_PASS: usize = 100;

/// Why a log record is not a delivery status MDC can use.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an SNS SMS delivery record: {0}")]
    Shape(&'static str),
    #[error("unknown status {0:?}")]
    UnknownStatus(String),
}

/// The report for one delivery-status record of `provider`.
pub fn parse(
    record: &str,
    provider: &str,
    received: Timestamp,
) -> Result<DeliveryReport, RecordError> {
    let record: Value = serde_json::from_str(record)?;
    let text = |pointer: &str| record.pointer(pointer).and_then(Value::as_str);
    let message_id = text("/notification/messageId")
        .ok_or(RecordError::Shape("no notification.messageId"))?
        .to_owned();
    let status = text("/status").ok_or(RecordError::Shape("no status"))?;
    let response = text("/delivery/providerResponse").unwrap_or("no provider response");
    let outcome = match status {
        "SUCCESS" => ReportOutcome::Delivered,
        "FAILURE" => ReportOutcome::Failed {
            reason: format!("SNS: {response}"),
            suppress: response.to_ascii_lowercase().contains("opted out"),
        },
        other => return Err(RecordError::UnknownStatus(other.to_owned())),
    };
    // "2016-06-28 00:40:34.558", UTC.
    let vendor_at = text("/notification/timestamp")
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").ok())
        .map(|t| t.and_utc());
    Ok(DeliveryReport {
        provider: provider.to_owned(),
        provider_message_id: message_id,
        reference: None,
        outcome,
        at: received,
        vendor_at,
        raw: record,
        note: None,
    })
}

/// A place in one log group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// The newest event time read (ms since the epoch).
    from_ms: i64,
    /// Event id → time, for events within [`OVERLAP`] of `from_ms`.
    seen: BTreeMap<String, i64>,
}

impl Cursor {
    fn forget_old(&mut self) {
        let horizon = self.from_ms - OVERLAP.as_millis() as i64;
        self.seen.retain(|_, at| *at >= horizon);
    }
}

/// Polls the delivery-status log groups of one SNS SMS provider.
pub struct SnsSmsLogsIntake {
    provider: String,
    groups: Vec<String>,
    client: aws_sdk_cloudwatchlogs::Client,
    sink: Arc<dyn ReportSink>,
    checkpoints: Arc<dyn Checkpoints>,
    interval: Duration,
    counts: IntakeCounts,
}

impl SnsSmsLogsIntake {
    /// Reads `log_group` (the `DirectPublishToPhoneNumber` group) and its
    /// `/Failure` group every `interval`.
    pub fn new(
        provider: &str,
        log_group: &str,
        sdk: &aws_config::SdkConfig,
        sink: Arc<dyn ReportSink>,
        checkpoints: Arc<dyn Checkpoints>,
        interval: Duration,
    ) -> Self {
        let log_group = log_group.trim_end_matches('/');
        Self {
            provider: provider.to_owned(),
            groups: vec![log_group.to_owned(), format!("{log_group}/Failure")],
            client: aws_sdk_cloudwatchlogs::Client::new(sdk),
            sink,
            checkpoints,
            interval,
            counts: IntakeCounts::default(),
        }
    }

    fn checkpoint(&self, group: &str) -> String {
        format!("sns-sms-logs/{}/{group}", self.provider)
    }

    async fn load(&self, group: &str) -> anyhow::Result<Cursor> {
        Ok(
            match self.checkpoints.load(&self.checkpoint(group)).await? {
                Some(value) => serde_json::from_value(value)?,
                None => Cursor {
                    from_ms: mdc_core::now().timestamp_millis() - FIRST_LOOKBACK.as_millis() as i64,
                    seen: BTreeMap::new(),
                },
            },
        )
    }

    async fn save(&self, group: &str, cursor: &Cursor) -> anyhow::Result<()> {
        self.checkpoints
            .save(&self.checkpoint(group), &serde_json::to_value(cursor)?)
            .await?;
        Ok(())
    }

    /// Reads `group` up to now; returns how many reports it handed on.
    pub async fn pass(&self, group: &str) -> anyhow::Result<usize> {
        let mut cursor = self.load(group).await?;
        let start = cursor.from_ms - OVERLAP.as_millis() as i64;
        let mut token: Option<String> = None;
        let mut handed = 0;
        for _ in 0..PAGES_PER_PASS {
            let page = match self
                .client
                .filter_log_events()
                .log_group_name(group)
                .start_time(start)
                .limit(PAGE)
                .set_next_token(token.take())
                .send()
                .await
            {
                Ok(page) => page,
                // The group appears with the first SMS SNS logs.
                Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(handed),
                Err(e) => anyhow::bail!("{}", DisplayErrorContext(&e)),
            };
            for event in page.events() {
                let (Some(id), Some(at)) = (event.event_id(), event.timestamp()) else {
                    continue;
                };
                if cursor.seen.contains_key(id) {
                    continue;
                }
                match parse(
                    event.message().unwrap_or_default(),
                    &self.provider,
                    mdc_core::now(),
                ) {
                    Ok(report) => {
                        if let Err(e) = self.sink.submit(report).await {
                            // Read again from here next pass.
                            cursor.from_ms = cursor.from_ms.min(at);
                            self.save(group, &cursor).await?;
                            return Err(e.into());
                        }
                        self.counts.accepted();
                        handed += 1;
                    }
                    Err(RecordError::UnknownStatus(status)) => {
                        self.counts.ignored();
                        tracing::info!(provider = %self.provider, %status, "Ignored an SNS SMS record of unknown status");
                    }
                    Err(e) => {
                        self.counts.refused();
                        tracing::warn!(provider = %self.provider, %group, event = id, error = %e, "Skipped an unreadable SNS SMS delivery record");
                    }
                }
                cursor.seen.insert(id.to_owned(), at);
                cursor.from_ms = cursor.from_ms.max(at);
            }
            cursor.forget_old();
            self.save(group, &cursor).await?;
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(handed)
    }
}

#[async_trait]
impl Intake for SnsSmsLogsIntake {
    fn name(&self) -> &str {
        &self.provider
    }

    fn polls(&self) -> bool {
        true
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        while !shutdown.is_cancelled() {
            for group in &self.groups {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    read = self.pass(group) => if let Err(e) = read {
                        tracing::warn!(provider = %self.provider, %group, error = %e, "Could not read SNS SMS delivery status; trying again next pass");
                    },
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
        Ok(())
    }

    fn counts(&self) -> &IntakeCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(status: &str, response: &str) -> String {
        json!({
            "notification": {"messageId": "sns-1", "timestamp": "2026-11-30 10:00:01.558"},
            "delivery": {"destination": "+14155550123", "providerResponse": response,
                         "phoneCarrier": "Carrier", "mcc": 310, "mnc": 4, "priceInUSD": 0.00645,
                         "smsType": "Transactional", "dwellTimeMs": 599, "dwellTimeMsUntilDeviceAck": 1344},
            "status": status
        })
        .to_string()
    }

    #[test]
    fn maps_success_failure_and_opt_outs() {
        let cases = [
            (
                record("SUCCESS", "Message has been accepted by phone carrier"),
                ReportOutcome::Delivered,
            ),
            (
                record("FAILURE", "Unknown error attempting to reach phone"),
                ReportOutcome::Failed {
                    reason: "SNS: Unknown error attempting to reach phone".into(),
                    suppress: false,
                },
            ),
            (
                record("FAILURE", "Phone number is opted out"),
                ReportOutcome::Failed {
                    reason: "SNS: Phone number is opted out".into(),
                    suppress: true,
                },
            ),
        ];
        for (body, expected) in cases {
            let report = parse(&body, "sns-sms", mdc_core::now()).expect("parses");
            assert_eq!(report.outcome, expected);
            assert_eq!(report.provider_message_id, "sns-1");
            assert_eq!(
                report.vendor_at.map(|t| t.to_rfc3339()),
                Some("2026-11-30T10:00:01.558+00:00".to_owned())
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_delivery_record() {
        for body in [
            "not json",
            r#"{"status": "SUCCESS"}"#,
            r#"{"notification": {"messageId": "x"}}"#,
        ] {
            assert!(
                !matches!(
                    parse(body, "p", mdc_core::now()),
                    Ok(_) | Err(RecordError::UnknownStatus(_))
                ),
                "{body}"
            );
        }
        assert!(matches!(
            parse(&record("PENDING", "x"), "p", mdc_core::now()),
            Err(RecordError::UnknownStatus(s)) if s == "PENDING"
        ));
    }

    #[test]
    fn a_cursor_forgets_only_what_the_overlap_cannot_return() {
        let mut cursor = Cursor {
            from_ms: 100_000,
            seen: BTreeMap::from([
                ("old".to_owned(), 100_000 - 60_001),
                ("edge".to_owned(), 100_000 - 60_000),
                ("new".to_owned(), 100_000),
            ]),
        };
        cursor.forget_old();
        assert_eq!(
            cursor.seen.keys().collect::<Vec<_>>(),
            ["edge", "new"],
            "an event at the start of the next read is still remembered"
        );
    }
}
