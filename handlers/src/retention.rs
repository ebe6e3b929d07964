//! Retention: what the store keeps of finished messages, and for how long.
//! Bodies (what the recipient read, and vendors' payloads in the trail) go
//! first; whole records later. Only finished messages are touched.

use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{Expired, Store};
use mdc_core::InvalidSetting;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;

/// The `[retention]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long after its creation a finished message keeps its bodies
    /// (`"7d"`), or `"forever"`.
    #[serde(with = "keep")]
    pub bodies: Option<Duration>,
    /// How long after its creation a finished message is kept at all
    /// (`"30d"`), or `"forever"`. Its idempotency key is free after it.
    #[serde(with = "keep")]
    pub records: Option<Duration>,
    /// Time between sweeps.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Messages removed or cleared per store call; a sweep calls until
    /// nothing is left.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            bodies: Some(Duration::from_secs(7 * DAY)),
            records: Some(Duration::from_secs(30 * DAY)),
            interval: Duration::from_secs(600),
            batch: 1000,
        }
    }
}

const DAY: u64 = 24 * 3600;

/// `"forever"` or a duration such as `"30d"`.
mod keep {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_str("forever"),
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "forever" {
            return Ok(None);
        }
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!("{e}; use a duration like \"30d\" or \"forever\""))
        })
    }
}

impl RetentionConfig {
    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (key, value) in [("bodies", self.bodies), ("records", self.records)] {
            if let Some(value) = value {
                if value < Duration::from_secs(3600) || value > Duration::from_secs(3660 * DAY) {
                    return Err(InvalidSetting::new(
                        format!("retention.{key}"),
                        "must be between 1h and 10 years, or \"forever\"",
                    ));
                }
            }
        }
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(DAY) {
            return Err(InvalidSetting::new(
                "retention.interval",
                "must be between 1s and 1d",
            ));
        }
        if self.batch == 0 || self.batch > 100_000 {
            return Err(InvalidSetting::new(
                "retention.batch",
                "must be between 1 and 100000",
            ));
        }
        Ok(())
    }
}

/// The periodic sweep over the store.
pub struct Retention {
    store: Arc<dyn Store>,
    config: RetentionConfig,
}

impl Retention {
    pub fn new(store: Arc<dyn Store>, config: RetentionConfig) -> Self {
        Self { store, config }
    }

    /// Whether there is anything to sweep for.
    pub fn enabled(&self) -> bool {
        self.config.bodies.is_some() || self.config.records.is_some()
    }

    /// One sweep: store calls until a call finds less than a batch to do.
    pub async fn sweep(&self) -> anyhow::Result<Expired> {
        let now = mdc_core::now();
        let before = |keep: Option<Duration>| {
            keep.and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now - d)
        };
        let (records_before, bodies_before) =
            (before(self.config.records), before(self.config.bodies));
        let mut total = Expired::default();
        loop {
            let step = self
                .store
                .expire(records_before, bodies_before, self.config.batch)
                .await?;
            total.removed += step.removed;
            total.redacted += step.redacted;
            metrics::counter!("mdc_retention_removed_total").increment(step.removed as u64);
            metrics::counter!("mdc_retention_cleared_total").increment(step.redacted as u64);
            if step.removed < self.config.batch && step.redacted < self.config.batch {
                break;
            }
            tokio::task::yield_now().await;
        }
        if total != Expired::default() {
            tracing::info!(
                removed = total.removed,
                cleared = total.redacted,
                "Retention: removed old finished messages and cleared old bodies"
            );
        }
        Ok(total)
    }

    /// Sweeps every `interval` (the first right away) until shut down.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.enabled() {
            return;
        }
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "Retention sweep failed; trying again later");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdc_core::contract::store::aged;
    use mdc_core::memory::MemoryStore;
    use mdc_core::{MessageRecord, Status};

    async fn finished(store: &Arc<dyn Store>, age_days: i64) -> MessageRecord {
        aged(
            store,
            "+14155550140",
            chrono::Duration::days(age_days),
            Status::Delivered,
        )
        .await
    }

    #[test]
    fn config_reads_durations_and_forever_and_names_bad_keys() {
        let config: RetentionConfig =
            serde_json::from_value(serde_json::json!({ "bodies": "2d", "records": "forever" }))
                .expect("parse");
        assert_eq!(config.bodies, Some(Duration::from_secs(2 * DAY)));
        assert_eq!(config.records, None);
        config.validate().expect("valid");
        let back = serde_json::to_value(&config).expect("serialize");
        assert_eq!(back["records"], "forever");
        assert_eq!(back["bodies"], "2days");

        let err =
            serde_json::from_value::<RetentionConfig>(serde_json::json!({ "bodies": "soon" }))
                .expect_err("a bad duration");
        assert!(err.to_string().contains("forever"), "{err}");
        let short = RetentionConfig {
            records: Some(Duration::from_secs(60)),
            ..RetentionConfig::default()
        };
        assert!(short
            .validate()
            .expect_err("invalid")
            .to_string()
            .contains("retention.records"));
        let zero = RetentionConfig {
            batch: 0,
            ..RetentionConfig::default()
        };
        assert!(zero
            .validate()
            .expect_err("invalid")
            .to_string()
            .contains("retention.batch"));
    }

    /// A sweep works through more than one batch, and the task sweeps
    /// again after each interval (time is paused, so the second sweep
    /// happens only because the interval passed).
    #[tokio::test(start_paused = true)]
    async fn the_task_sweeps_in_batches_and_again_each_interval() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        for _ in 0..5 {
            finished(&store, 40).await;
        }
        let keep = finished(&store, 1).await;
        let retention = Arc::new(Retention::new(
            store.clone(),
            RetentionConfig {
                batch: 2,
                interval: Duration::from_secs(60),
                ..RetentionConfig::default()
            },
        ));
        let token = CancellationToken::new();
        let task = tokio::spawn(retention.clone().run(token.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let filter = mdc_core::ports::ListFilter {
            limit: 100,
            ..Default::default()
        };
        let left = store.list(&filter).await.expect("list");
        assert_eq!(left.len(), 1, "only the recent one stays");
        assert_eq!(left[0].message.id, keep.message.id);

        // One more old message: nothing removes it until the next sweep.
        finished(&store, 40).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.list(&filter).await.expect("list").len(), 2);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(store.list(&filter).await.expect("list").len(), 1);

        token.cancel();
        task.await.expect("join");
    }

    #[tokio::test]
    async fn forever_for_both_means_no_task() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let retention = Retention::new(
            store,
            RetentionConfig {
                bodies: None,
                records: None,
                ..RetentionConfig::default()
            },
        );
        assert!(!retention.enabled());
    }
}
