//! One typed config: defaults built in, then a TOML file, then `MDC_`
//! environment variables (`MDC_LISTEN`, `MDC_DISPATCHER__BATCH_SIZE`), then
//! command-line flags. Validated at start-up; errors name the key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use mdc_client::ClientConfig;
use mdc_core::{InvalidSetting, Priority};
use mdc_dispatcher::routing::breaker::BreakerConfig;
use mdc_dispatcher::routing::config::RouteConfig;
use mdc_dispatcher::DispatcherConfig;
use mdc_embedded::QueueLayout;
use mdc_handlers::{ReconcilerConfig, RetentionConfig};
use mdc_providers::config::ProviderConfig;
use mdc_simulators::SimulatorConfig;
use serde::{Deserialize, Serialize};

/// Partitions and consumers of one priority's topics (one topic per channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    pub partitions: u32,
    pub consumers: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Where the embedded backends keep their data.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub lanes: HashMap<Priority, Lane>,
    pub responses: Lane,
    pub client: ClientConfig,
    pub dispatcher: DispatcherConfig,
    pub simulator: SimulatorConfig,
    /// Vendor accounts by name; `kind` picks the vendor.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Per channel, the providers to use and how. Without any route every
    /// channel goes to its simulator.
    pub routes: HashMap<mdc_core::Channel, RouteConfig>,
    pub breaker: BreakerConfig,
    /// The safety net that reschedules messages whose retry timer was lost.
    pub reconciler: ReconcilerConfig,
    /// How long finished messages keep their bodies, and their records.
    pub retention: RetentionConfig,
    /// Which implementation backs the store and the retry timers.
    pub backends: crate::backends::Backends,
    pub callbacks: CallbacksConfig,
    /// Delivery of outcomes to client services' webhook endpoints.
    pub webhooks: mdc_handlers::FeedbackConfig,
    /// `keys` (default): the API wants an API key, except on a loopback
    /// address while no key exists. `none`: the API is open to anyone who
    /// can reach it (behind a gateway that authenticates, say).
    pub auth: AuthMode,
    /// Per internal service (the `--service` of its keys): its submit rate.
    pub services: BTreeMap<String, ServiceConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Keys,
    None,
}

/// Limits of one internal service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Messages per second its keys may submit (on average); 0: no limit.
    pub rate_per_second: u32,
    /// Messages it may submit at once above the rate; default: one second's worth.
    pub burst: Option<u32>,
}

/// Settings of the vendor callback endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Tests only: trust SNS signing certificate and subscribe URLs on
    /// loopback, so tests can sign with their own key. Never set it in
    /// production: anyone who can reach MDC could then forge SNS messages.
    pub insecure_sns_loopback_urls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            max_body_bytes: 256 * 1024,
            lanes: HashMap::from([
                (
                    Priority::Critical,
                    Lane {
                        partitions: 4,
                        consumers: 2,
                    },
                ),
                (
                    Priority::Normal,
                    Lane {
                        partitions: 4,
                        consumers: 2,
                    },
                ),
                (
                    Priority::Bulk,
                    Lane {
                        partitions: 2,
                        consumers: 1,
                    },
                ),
            ]),
            responses: Lane {
                partitions: 4,
                consumers: 2,
            },
            client: ClientConfig::default(),
            dispatcher: DispatcherConfig::default(),
            simulator: SimulatorConfig::default(),
            providers: BTreeMap::new(),
            routes: HashMap::new(),
            breaker: BreakerConfig::default(),
            reconciler: ReconcilerConfig::default(),
            retention: RetentionConfig::default(),
            backends: crate::backends::Backends::default(),
            callbacks: CallbacksConfig::default(),
            webhooks: mdc_handlers::FeedbackConfig::default(),
            auth: AuthMode::default(),
            services: BTreeMap::new(),
        }
    }
}

/// The sections of [`Config`], for picking `MDC_` variables out of the environment.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "max_body_bytes",
    "lanes",
    "responses",
    "client",
    "dispatcher",
    "simulator",
    "providers",
    "routes",
    "breaker",
    "reconciler",
    "retention",
    "backends",
    "callbacks",
    "webhooks",
    "auth",
    "services",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid config: {0}")]
    Parse(String),
    /// Its message is the setting's; no source, so a chain prints it once.
    #[error("invalid config: {0}")]
    Invalid(InvalidSetting),
    /// Loading was never attempted (a test helper's closure did not run).
    #[error("config not loaded")]
    NotLoaded,
}

impl From<InvalidSetting> for ConfigError {
    fn from(setting: InvalidSetting) -> Self {
        ConfigError::Invalid(setting)
    }
}

impl Config {
    /// Layers the sources; `file` is optional, `overrides` come from flags.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only variables naming a config section: MDC_SERVER (the CLI's) and
        // the test harness's MDC_TEST_* are not config.
        let env = Env::prefixed("MDC_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            TOP_LEVEL_KEYS.iter().any(|top| {
                key == *top
                    || key.starts_with(&format!("{top}."))
                    || key.starts_with(&format!("{top}__"))
            })
        });
        let figment = figment.merge(env).merge(overrides);
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe(e)))?;
        config.validate()?;
        config.dispatcher.consumers = config
            .lanes
            .iter()
            .map(|(&p, lane)| (p, lane.consumers))
            .collect();
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for &priority in Priority::ALL {
            let Some(lane) = self.lanes.get(&priority) else {
                return Err(InvalidSetting::new(
                    format!("lanes.{priority}"),
                    "is missing; every priority needs partitions and consumers",
                ));
            };
            check_lane(&format!("lanes.{priority}"), lane)?;
        }
        check_lane("responses", &self.responses)?;
        if self.max_body_bytes < 1024 {
            return Err(InvalidSetting::new(
                "max_body_bytes",
                "must be at least 1024",
            ));
        }
        self.client.validate()?;
        self.dispatcher.validate()?;
        self.breaker.validate()?;
        self.reconciler.validate()?;
        self.retention.validate()?;
        self.webhooks.validate()?;
        self.simulator.validate()?;
        self.backends.validate()?;
        for (name, service) in &self.services {
            if service.burst == Some(0) {
                return Err(InvalidSetting::new(
                    format!("services.{name}.burst"),
                    "must be at least 1",
                ));
            }
            if service.burst.is_some() && service.rate_per_second == 0 {
                return Err(InvalidSetting::new(
                    format!("services.{name}.rate_per_second"),
                    "is needed with burst",
                ));
            }
        }
        if let crate::backends::QueueBackend::Kafka(kafka) = &self.backends.queue {
            // A member that drains for longer than its session is thrown out
            // of the group mid-drain and its partitions handed over.
            if self.dispatcher.drain_timeout >= kafka.session_timeout {
                return Err(InvalidSetting::new(
                    "dispatcher.drain_timeout",
                    "must be shorter than backends.queue.session_timeout",
                ));
            }
        }
        Ok(())
    }

    /// Whether any route sends through a built-in simulator (every route
    /// does when none is configured).
    pub fn uses_simulators(&self) -> bool {
        self.routes.is_empty()
            || self.routes.values().any(|route| {
                route
                    .members
                    .iter()
                    .any(|m| !self.providers.contains_key(&m.provider))
            })
    }

    pub fn queue_layout(&self) -> QueueLayout {
        QueueLayout {
            partitions: self
                .lanes
                .iter()
                .map(|(&p, lane)| (p, lane.partitions))
                .collect(),
            response_partitions: self.responses.partitions,
            ..QueueLayout::default()
        }
    }
}

fn check_lane(key: &str, lane: &Lane) -> Result<(), InvalidSetting> {
    if !(1..=1024).contains(&lane.partitions) {
        return Err(InvalidSetting::new(
            format!("{key}.partitions"),
            "must be between 1 and 1024",
        ));
    }
    if !(1..=256).contains(&lane.consumers) {
        return Err(InvalidSetting::new(
            format!("{key}.consumers"),
            "must be between 1 and 256",
        ));
    }
    if lane.consumers > lane.partitions {
        return Err(InvalidSetting::new(
            format!("{key}.consumers"),
            format!("must not exceed {key}.partitions (a consumer without a partition idles)"),
        ));
    }
    Ok(())
}

/// Figment's errors, one line per problem, each naming its key and source.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Loads the config while holding figment's environment lock, so no test
/// sees the variables another test sets (plain `cargo test` runs them in
/// threads of one process).
#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
pub(crate) fn load_locked(file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut result = None;
    figment::Jail::expect_with(|_| {
        result = Some(Config::load(file, Figment::new()));
        Ok(())
    });
    result.unwrap_or(Err(ConfigError::NotLoaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mdc.toml");
        std::fs::write(&path, text).expect("write");
        load_locked(Some(&path))
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn environment_overrides_and_unrelated_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MDC_LISTEN", "127.0.0.1:9999");
            jail.set_env("MDC_DISPATCHER__BATCH_SIZE", "17");
            jail.set_env("MDC_SERVER", "http://elsewhere");
            jail.set_env("MDC_TEST_SMTP_ADDR", "127.0.0.1:25");
            let config = Config::load(None, Figment::new()).expect("valid");
            assert_eq!(config.listen.port(), 9999);
            assert_eq!(config.dispatcher.batch_size, 17);
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid() {
        let config = load_locked(None).expect("defaults");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.dispatcher.consumers(Priority::Critical), 2);
    }

    #[test]
    fn file_values_override_defaults() {
        let config = load_toml(
            "listen = \"127.0.0.1:9000\"\n[lanes.bulk]\npartitions = 8\nconsumers = 3\n[client.deadlines]\notp = \"5m\"\n[dispatcher]\nretry_schedule = [\"2s\", \"1m\"]\n",
        )
        .expect("valid");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(
            config.lanes[&Priority::Bulk],
            Lane {
                partitions: 8,
                consumers: 3
            }
        );
        assert_eq!(config.dispatcher.consumers(Priority::Bulk), 3);
        assert_eq!(
            config.client.deadlines[&mdc_core::MessageType::Otp].as_secs(),
            300
        );
        assert_eq!(config.dispatcher.retry_schedule.len(), 2);
    }

    /// `mdc serve` prints errors with their whole chain (`{:#}`): an
    /// invalid setting must read once, not twice.
    #[test]
    fn an_invalid_setting_is_printed_once() {
        let error = anyhow::Error::from(ConfigError::from(InvalidSetting::new(
            "webhooks.timeout",
            "must be between 100ms and 1m",
        )));
        assert_eq!(
            format!("{error:#}"),
            "invalid config: webhooks.timeout must be between 100ms and 1m"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("listen = \"not an address\"", "listen"),
            (
                "[lanes.bulk]\npartitions = 0\nconsumers = 1",
                "lanes.bulk.partitions",
            ),
            (
                "[lanes.bulk]\npartitions = 2\nconsumers = 3",
                "lanes.bulk.consumers",
            ),
            ("[dispatcher]\nlease = \"1s\"", "dispatcher.lease"),
            // A lease must outlast a send by a second at least.
            (
                "[dispatcher]\nsend_timeout = \"10s\"\nlease = \"10500ms\"",
                "dispatcher.lease",
            ),
            // Too long to add the margin to: refused, not a panic.
            (
                "[dispatcher]\nsend_timeout = \"18446744073709551615s\"",
                "dispatcher.send_timeout",
            ),
            (
                "[dispatcher]\nsend_timeout = \"soon\"",
                "dispatcher.send_timeout",
            ),
            ("[client]\nsms_max_segments = 0", "client.sms_max_segments"),
            ("[reconciler]\ninterval = \"0s\"", "reconciler.interval"),
            ("[reconciler]\ngrace = \"later\"", "reconciler.grace"),
            ("[retention]\nbodies = \"a week\"", "retention.bodies"),
            ("[retention]\nrecords = \"10m\"", "retention.records"),
            ("[retention]\ninterval = \"0s\"", "retention.interval"),
            // Durations are bounded: a unit typed wrong fails at start-up.
            ("[dispatcher]\nlease = \"30d\"", "dispatcher.lease"),
            (
                "[dispatcher]\nretry_schedule = [\"1s\", \"30d\"]",
                "dispatcher.retry_schedule",
            ),
            ("[dispatcher.min_share]\nbulk = 80", "dispatcher.min_share.bulk"),
            ("[dispatcher.min_share]\ncritical = 5", "dispatcher.min_share.critical"),
            ("[reconciler]\ngrace = \"3d\"", "reconciler.grace"),
            ("[reconciler]\nqueued_grace = \"2d\"", "reconciler.queued_grace"),
            ("[reconciler]\nfinal_timeout = \"5m\"", "reconciler.final_timeout"),
            ("[reconciler]\nfinal_timeout = \"31d\"", "reconciler.final_timeout"),
            ("[breaker]\nopen_for = \"3d\"", "breaker.open_for"),
            ("[simulator]\nreport_delay = \"1h\"", "simulator.report_delay"),
            ("[client.deadlines]\notp = \"90d\"", "client.deadlines.otp"),
            (
                "[client.priority_deadline_caps]\nbulk = \"90d\"",
                "client.priority_deadline_caps.bulk",
            ),
            (
                "[backends.retry]\nkind = \"redis\"\nurl = \"redis://x\"\nsweep_interval = \"1h\"",
                "backends.retry.sweep_interval",
            ),
            ("unknown_key = 1", "unknown_key"),
            ("[lanes.urgent]\npartitions = 1\nconsumers = 1", "urgent"),
            (
                "[backends.queue]\nkind = \"kafka\"\nbrokers = \"\"",
                "backends.queue.brokers",
            ),
            (
                "[backends.queue]\nkind = \"kafka\"\nbrokers = \"k:9092\"\nprefix = \"a b\"",
                "backends.queue.prefix",
            ),
            (
                "[backends.queue]\nkind = \"kafka\"\nbrokers = \"k:9092\"\nsession_timeout = \"10s\"",
                "dispatcher.drain_timeout",
            ),
            (
                "[backends.queue]\nkind = \"kafka\"\nbrokers = \"k:9092\"\nreplication_factor = 2\nmin_insync_replicas = 3",
                "backends.queue.min_insync_replicas",
            ),
            (
                "[backends.queue]\nkind = \"kafka\"\nbrokers = \"k:9092\"\npartitions = 3",
                "partitions",
            ),
        ];
        for (text, key) in cases {
            let err = load_toml(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let missing = load_locked(Some(Path::new("/nonexistent/mdc.toml"))).expect_err("missing");
        assert!(missing.to_string().contains("does not exist"));
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_example_config_is_valid() {
        // The crate's directory when the test runs (cargo sets it), not where
        // the binary was built.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let path = std::path::Path::new(&dir).join("../mdc.example.toml");
        super::load_locked(Some(&path)).expect("mdc.example.toml must load");
    }
}

#[cfg(test)]
mod providers {
    async fn build(text: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mdc.toml");
        std::fs::write(&path, text).expect("write");
        let config = super::load_locked(Some(&path)).map_err(|e| e.to_string())?;
        let devices = mdc_embedded::open_stores(&dir.path().join("data"))
            .expect("open")
            .devices;
        let adapters = mdc_providers::config::build(
            &config.providers,
            config.dispatcher.send_timeout,
            devices,
        )
        .await
        .map_err(|e| e.to_string())?;
        mdc_dispatcher::routing::config::build(
            &config.routes,
            &config.breaker,
            &adapters.by_name,
            &[],
            config.dispatcher.send_timeout,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    const KALEYRA: &str = "[providers.k]\nkind = \"kaleyra\"\nsid = \"HX1\"\napi_key_env = \"MDC_UNSET_KEY_FOR_TEST\"\ncallback_url = \"http://localhost/cb\"\ncallback_token_env = \"MDC_UNSET_TOKEN_FOR_TEST\"\n";

    #[tokio::test]
    async fn provider_and_route_errors_name_the_key() {
        let cases = [
            ("[providers.x]\nkind = \"fax\"\n", "providers.x"),
            ("[providers.s]\nkind = \"smtp\"\nhost = \"mail\"\nport = \"high\"\n", "providers.s: invalid type"),
            (KALEYRA, "providers.k.api_key_env"),
            ("[routes.sms]\nmembers = [{ provider = \"nope\" }]\n", "routes.sms.members[0].provider"),
            ("[providers.s]\nkind = \"smtp\"\nhost = \"mail\"\nsecurity = \"none\"\n[routes.sms]\nmembers = [{ provider = \"s\" }]\n", "routes.sms.members[0].provider"),
            ("[providers.s]\nkind = \"smtp\"\nhost = \"mail\"\nsecurity = \"none\"\n[routes.email]\nmembers = [{ provider = \"s\", rate_per_second = 0.0 }]\n", "routes.email.members[0].rate_per_second"),
            ("[routes.email]\nmembers = []\n", "routes.email.members"),
            ("[breaker]\nmin_requests = 50\n", "breaker"),
            ("[providers.s]\nkind = \"smtp\"\nhost = \"mail\"\nsecurity = \"none\"\ntimeout = \"2h\"\n", "providers.s.timeout"),
        ];
        for (text, key) in cases {
            let err = build(text).await.expect_err(text);
            assert!(err.contains(key), "{text}\n→ {err}");
        }
    }

    #[tokio::test]
    async fn a_valid_route_builds() {
        build("[providers.s]\nkind = \"smtp\"\nhost = \"mail\"\nsecurity = \"none\"\n[routes.email]\nmode = \"weighted\"\nmembers = [{ provider = \"s\", weight = 3, rate_per_second = 5.0 }]\n")
            .await
            .expect("valid");
    }
}
