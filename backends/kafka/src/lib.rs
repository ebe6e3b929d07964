//! The MDC queue on Kafka (through librdkafka): one topic per channel ×
//! priority, `{prefix}.{channel}.{priority}`, plus `{prefix}.responses`.
//!
//! - Producing waits for the broker's acknowledgement from all in-sync
//!   replicas (`acks=all`, idempotent producer); the record key is the
//!   normalised recipient, so one recipient's messages keep their order.
//! - Each topic is consumed by one consumer group (`{group_prefix}.{role}.{topic}`).
//!   Offsets are stored only when a record is acknowledged, and only up to the
//!   first record still in flight in its partition, so a crash or a rebalance
//!   redelivers (at least once) instead of losing anything.
//! - Topics are never created implicitly: [`create_topics`] makes them with
//!   the configured partitions, idempotently.

mod consumer;
mod topics;

use mdc_core::InvalidSetting;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mdc_core::ports::{ConsumerSpec, Queue, QueueConsumer, QueueError, QueueLayout, Topic};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};

pub use topics::{create_topics, TopicOutcome};

/// Connection and layout of the Kafka queue (`[backends.queue]` with
/// `kind = "kafka"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Topic names start with this: `{prefix}.sms.critical`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Consumer group ids start with this; defaults to the topic prefix.
    #[serde(default)]
    pub group_prefix: Option<String>,
    /// Replicas of each topic when MDC creates it (3 in production).
    #[serde(default = "default_replication")]
    pub replication_factor: u16,
    /// `min.insync.replicas` of topics MDC creates; with `acks=all` a write
    /// then survives the loss of `replication_factor - min_insync_replicas`
    /// brokers. Unset leaves the broker's default.
    #[serde(default)]
    pub min_insync_replicas: Option<u16>,
    /// Create missing topics at start-up (else `mdc topics create` does it).
    #[serde(default)]
    pub create_topics: bool,
    /// How long a submit waits for the broker before failing.
    #[serde(default = "default_produce_timeout", with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// A consumer silent for longer is dropped from its group.
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// The idempotent producer keeps a broker-side retry from writing a
    /// record twice or out of order. Leave it on; off only for brokers that
    /// mishandle it (the dispatcher's claim still absorbs duplicates).
    #[serde(default = "yes")]
    pub idempotent_producer: bool,
    /// Extra librdkafka properties (`security.protocol`, `ssl.ca.location`,
    /// `sasl.mechanism`, `sasl.username`, timeouts, …), applied to
    /// producers, consumers and the admin client. The build has TLS and
    /// SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER).
    #[serde(default, alias = "options")]
    pub properties: BTreeMap<String, String>,
    /// Properties whose values are secrets, read from environment
    /// variables at start-up: `{ "sasl.password" = "KAFKA_PASSWORD" }`.
    #[serde(default)]
    pub properties_from_env: BTreeMap<String, String>,
}

fn default_prefix() -> String {
    "mdc".into()
}

fn yes() -> bool {
    true
}

fn default_replication() -> u16 {
    3
}

fn default_produce_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_session_timeout() -> Duration {
    Duration::from_secs(30)
}

impl KafkaConfig {
    pub fn new(brokers: &str, prefix: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            prefix: prefix.to_owned(),
            group_prefix: None,
            replication_factor: default_replication(),
            min_insync_replicas: None,
            create_topics: false,
            produce_timeout: default_produce_timeout(),
            session_timeout: default_session_timeout(),
            idempotent_producer: true,
            properties: BTreeMap::new(),
            properties_from_env: BTreeMap::new(),
        }
    }

    /// The Kafka topic behind `topic`.
    pub fn topic_name(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.name())
    }

    /// The consumer group of `topic`: the role that consumes it, per topic.
    pub fn group_id(&self, topic: Topic) -> String {
        let role = match topic {
            Topic::Messages(..) => "dispatcher",
            Topic::Responses | Topic::ParkedReports => "handlers",
            Topic::Outcomes => "feedback",
        };
        let prefix = self.group_prefix.as_deref().unwrap_or(&self.prefix);
        format!("{prefix}.{role}.{}", topic.name())
    }

    /// The consumer group `group` of `topic` (topics several groups read).
    pub fn named_group_id(&self, topic: Topic, group: &str) -> String {
        let prefix = self.group_prefix.as_deref().unwrap_or(&self.prefix);
        format!("{prefix}.{group}.{}", topic.name())
    }

    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.brokers.trim().is_empty() {
            return Err(InvalidSetting::new(
                "backends.queue.brokers",
                "must list at least one broker",
            ));
        }
        if self.prefix.is_empty()
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(InvalidSetting::new(
                "backends.queue.prefix",
                "must be letters, digits, '.', '_' or '-' (a Kafka topic name)",
            ));
        }
        if self.replication_factor == 0 {
            return Err(InvalidSetting::new(
                "backends.queue.replication_factor",
                "must be at least 1",
            ));
        }
        if let Some(min) = self.min_insync_replicas {
            if min == 0 || min > self.replication_factor {
                return Err(InvalidSetting::new(
                    "backends.queue.min_insync_replicas",
                    "must be between 1 and replication_factor",
                ));
            }
        }
        for (key, variable) in &self.properties_from_env {
            if std::env::var(variable).is_err() {
                return Err(InvalidSetting::new(
                    format!("backends.queue.properties_from_env.{key}"),
                    format!("names the environment variable {variable}, which is not set"),
                ));
            }
        }
        // librdkafka checks names and values: a typo shows at start-up.
        let extra = !self.properties.is_empty() || !self.properties_from_env.is_empty();
        if let Err(e) = extra
            .then(|| {
                self.client_config()
                    .create::<rdkafka::producer::BaseProducer>()
            })
            .transpose()
        {
            return Err(InvalidSetting::new(
                "backends.queue.properties",
                format!("librdkafka refuses them: {e}"),
            ));
        }
        mdc_core::setting::duration_within(
            "backends.queue.produce_timeout",
            self.produce_timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        mdc_core::setting::duration_within(
            "backends.queue.session_timeout",
            self.session_timeout,
            Duration::from_secs(1),
            Duration::from_secs(1800),
        )?;
        if self.produce_timeout < Duration::from_millis(100) {
            return Err(InvalidSetting::new(
                "backends.queue.produce_timeout",
                "must be at least 100ms",
            ));
        }
        if self.session_timeout < Duration::from_secs(1) {
            return Err(InvalidSetting::new(
                "backends.queue.session_timeout",
                "must be at least 1s",
            ));
        }
        Ok(())
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "mdc")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        for (key, variable) in &self.properties_from_env {
            // Checked by `validate`: a missing variable never gets here.
            if let Ok(value) = std::env::var(variable) {
                config.set(key, value);
            }
        }
        config
    }
}

/// Sends librdkafka's own logs and errors to `tracing`, each distinct line
/// at most once per [`REPEAT_WINDOW`]: with the brokers down every consumer
/// of every lane reports the same failure several times a second.
#[derive(Default)]
pub(crate) struct Logging;

/// How long an identical librdkafka line is held back after it was logged.
const REPEAT_WINDOW: Duration = Duration::from_secs(30);

/// Lines logged recently: when, and how many repeats were held back since.
#[derive(Default)]
struct Repeats {
    seen: HashMap<String, (Instant, u64)>,
}

impl Repeats {
    /// `Some(held back since the last time)` when `line` should be logged now.
    fn admit(&mut self, line: &str, now: Instant) -> Option<u64> {
        if self.seen.len() > 1000 {
            self.seen
                .retain(|_, (at, _)| now.duration_since(*at) < REPEAT_WINDOW);
        }
        match self.seen.get_mut(line) {
            Some((at, held)) if now.duration_since(*at) < REPEAT_WINDOW => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let repeats = *held;
                *at = now;
                *held = 0;
                Some(repeats)
            }
            None => {
                self.seen.insert(line.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

fn admit(line: &str) -> Option<u64> {
    static REPEATS: OnceLock<Mutex<Repeats>> = OnceLock::new();
    REPEATS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(line, Instant::now())
}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if matches!(level, RDKafkaLogLevel::Debug) {
            tracing::debug!(target: "librdkafka", facility, "{message}");
            return;
        }
        let Some(repeats) = admit(message) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, repeats, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility, repeats, "{message}")
            }
            _ => tracing::info!(target: "librdkafka", facility, repeats, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(repeats) = admit(reason) {
            tracing::warn!(target: "librdkafka", %error, repeats, "{reason}");
        }
    }
}

pub(crate) fn unavailable(e: KafkaError) -> QueueError {
    let code = e.rdkafka_error_code();
    match code {
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic,
        ) => QueueError::Unavailable(format!("Kafka: {e}").into()),
        _ => QueueError::Other(format!("Kafka: {e}").into()),
    }
}

/// The queue port on Kafka.
pub struct KafkaQueue {
    config: KafkaConfig,
    layout: QueueLayout,
    producer: RwLock<FutureProducer<Logging>>,
    /// Produce calls in a row that the brokers answered with an error.
    refused: AtomicU32,
}

/// After this many refusals in a row the producer is replaced: a broker
/// that lost the idempotent producer's state refuses it for good.
const REFUSALS_BEFORE_NEW_PRODUCER: u32 = 3;

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer<Logging>, QueueError> {
    let timeout_ms = config.produce_timeout.as_millis().to_string();
    config
        .client_config()
        .set(
            "enable.idempotence",
            if config.idempotent_producer {
                "true"
            } else {
                "false"
            },
        )
        .set("acks", "all")
        .set("message.timeout.ms", &timeout_ms)
        .set("linger.ms", "2")
        .create_with_context(Logging)
        .map_err(|e| QueueError::Other(format!("Kafka producer config: {e}").into()))
}

impl KafkaQueue {
    /// Connects and checks that every topic exists (creating the missing
    /// ones when `create_topics` is set), so a misconfiguration shows at
    /// start-up rather than at the first submit.
    pub async fn connect(config: KafkaConfig, layout: QueueLayout) -> Result<Self, QueueError> {
        config.validate().map_err(|e| QueueError::Other(e.into()))?;
        if config.create_topics {
            create_topics(&config, &layout).await?;
        }
        let producer = new_producer(&config)?;
        let missing = topics::missing(&config, &producer).await?;
        if !missing.is_empty() {
            return Err(QueueError::Other(format!(
                "Kafka topics missing: {}; create them with `mdc topics create` or set backends.queue.create_topics = true",
                missing.join(", ")
            ).into()));
        }
        Ok(Self {
            config,
            layout,
            producer: RwLock::new(producer),
            refused: AtomicU32::new(0),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn producer(&self) -> FutureProducer<Logging> {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new producer unless another caller already did.
    fn replace_producer(&self, failed: &FutureProducer<Logging>) {
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match new_producer(&self.config) {
            Ok(producer) => {
                *current = producer;
                self.refused.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "Could not start a new Kafka producer"),
        }
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn ready(&self) -> Result<(), QueueError> {
        topics::reachable(&self.producer(), std::time::Duration::from_secs(2)).await
    }

    async fn lag(&self, topic: Topic) -> Result<Option<u64>, QueueError> {
        let config = self.config.clone();
        let partitions = self.layout.partitions(topic);
        tokio::task::spawn_blocking(move || topics::group_lag(&config, topic, partitions))
            .await
            .map_err(|e| QueueError::Other(e.into()))?
            .map(Some)
    }

    async fn produce(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<(), QueueError> {
        let name = self.config.topic_name(topic);
        let record = FutureRecord::to(&name).key(key).payload(&payload);
        // Waiting for room in the local buffer counts against the same budget,
        // and the caller is answered when it is spent even if librdkafka takes
        // longer to give the record up (it does, with the idempotent producer
        // and no broker). A record that still reaches Kafka afterwards belongs
        // to a submit that was refused: the dispatcher finds no message for it.
        let timeout = self.config.produce_timeout;
        let producer = self.producer();
        let send = producer.send(record, Timeout::After(timeout));
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(_)) => {
                self.refused.store(0, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err((e, _))) => {
                let fatal = producer.client().fatal_error();
                let timed_out = e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                let refusals = if timed_out {
                    0
                } else {
                    self.refused.fetch_add(1, Ordering::Relaxed) + 1
                };
                if fatal.is_some() || refusals >= REFUSALS_BEFORE_NEW_PRODUCER {
                    tracing::error!(error = %e, ?fatal, "The Kafka producer keeps being refused; starting a new one");
                    self.replace_producer(&producer);
                }
                Err(unavailable(e))
            }
            Err(_) => Err(QueueError::Unavailable(
                format!("Kafka: no acknowledgement from the brokers within {timeout:?}").into(),
            )),
        }
    }

    async fn consumer(
        &self,
        topic: Topic,
        _spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        let consumer = consumer::KafkaConsumer::subscribe(&self.config, topic, None)?;
        tracing::debug!(
            %topic,
            partitions = self.layout.partitions(topic),
            group = %self.config.group_id(topic),
            "Joined consumer group"
        );
        Ok(Arc::new(consumer))
    }

    async fn group_consumer(
        &self,
        topic: Topic,
        group: &str,
        _spec: ConsumerSpec,
    ) -> Result<Arc<dyn QueueConsumer>, QueueError> {
        Ok(Arc::new(consumer::KafkaConsumer::subscribe(
            &self.config,
            topic,
            Some(group),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_properties_are_supported_and_secrets_come_from_the_environment() {
        let mut config = KafkaConfig::new("127.0.0.1:9", "mdc");
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "mdc"),
        ] {
            config.properties.insert(key.into(), value.into());
        }
        config.properties_from_env.insert(
            "sasl.password".into(),
            "MDC_TEST_UNSET_KAFKA_PASSWORD".into(),
        );
        let missing = config.validate().expect_err("the variable is not set");
        assert_eq!(
            missing.key,
            "backends.queue.properties_from_env.sasl.password"
        );
        // PATH is set everywhere; its value stands in for a secret.
        config
            .properties_from_env
            .insert("sasl.password".into(), "PATH".into());
        config
            .validate()
            .expect("this build speaks TLS and SASL/SCRAM");
        assert_eq!(
            config.client_config().get("sasl.password"),
            std::env::var("PATH").ok().as_deref()
        );
        config
            .properties
            .insert("security.protocol".into(), "carrier-pigeon".into());
        let refused = config.validate().expect_err("not a protocol");
        assert_eq!(refused.key, "backends.queue.properties");
    }

    #[test]
    fn a_repeated_line_is_logged_once_per_window_with_the_count_held_back() {
        let mut repeats = Repeats::default();
        let start = Instant::now();
        assert_eq!(repeats.admit("brokers are down", start), Some(0));
        for i in 1..=5 {
            let at = start + Duration::from_secs(i);
            assert_eq!(repeats.admit("brokers are down", at), None);
        }
        assert_eq!(
            repeats.admit("another line", start + Duration::from_secs(1)),
            Some(0)
        );
        assert_eq!(
            repeats.admit("brokers are down", start + REPEAT_WINDOW),
            Some(5)
        );
        assert_eq!(
            repeats.admit("brokers are down", start + REPEAT_WINDOW),
            None
        );
    }
}
