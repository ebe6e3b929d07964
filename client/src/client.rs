//! [`Client`]: what an internal service holds to send messages.

use std::time::Duration;

use mdc_core::{InvalidSetting, MessageId};

use crate::error::{Sent, StatusError, SubmitError};
use crate::{enrich, ClientConfig, SubmitRequest};

/// How messages reach MDC.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Transport {
    /// `POST /v1/messages` to a running MDC ([`Config::api_url`]), with the
    /// service's API key.
    #[cfg(feature = "http")]
    Http,
    /// Straight onto MDC's priority topics on Kafka. MDC's dispatchers
    /// record each message as they take it; no database credentials needed.
    #[cfg(feature = "direct")]
    Direct(crate::KafkaConfig),
}

/// Everything a [`Client`] needs; [`Config::from_env`] reads it from the
/// environment.
#[derive(Clone)]
pub struct Config {
    pub transport: Transport,
    /// The sending service's name. Over http the API key decides the
    /// service (this name is only checked against it); over direct this
    /// name is recorded with every message, as the key would.
    pub service: Option<String>,
    /// MDC's HTTP API (`http://127.0.0.1:8080`): where the http transport
    /// sends and where [`Client::status`] reads.
    pub api_url: Option<String>,
    /// The service's API key (`mdc_sk_…`), from `mdc keys create`.
    pub api_key: Option<String>,
    /// Validation and enrichment: keep it as MDC's `[client]` section so
    /// both judge a message alike (the defaults match).
    pub rules: ClientConfig,
    /// How long one HTTP request may take.
    pub timeout: Duration,
    /// Tries per message over http before giving up (connection errors,
    /// 503 and 429 are retried, honouring `Retry-After`).
    pub attempts: u32,
    /// The longest pause between tries, whatever `Retry-After` says.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("transport", &self.transport)
            .field("service", &self.service)
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The variables [`Config::from_env`] reads.
pub const ENV_TRANSPORT: &str = "MDC_TRANSPORT";
pub const ENV_URL: &str = "MDC_URL";
pub const ENV_API_KEY: &str = "MDC_API_KEY";
pub const ENV_SERVICE: &str = "MDC_SERVICE";
pub const ENV_KAFKA_BROKERS: &str = "MDC_KAFKA_BROKERS";
pub const ENV_KAFKA_PREFIX: &str = "MDC_KAFKA_PREFIX";

impl Config {
    /// Over http to `api_url`, with the defaults for everything else.
    #[cfg(feature = "http")]
    pub fn http(api_url: impl Into<String>, api_key: Option<String>) -> Self {
        Self::with(Transport::Http, Some(api_url.into()), api_key)
    }

    /// Straight to the priority topics on `kafka`, as `service`.
    #[cfg(feature = "direct")]
    pub fn direct(kafka: crate::KafkaConfig, service: impl Into<String>) -> Self {
        let mut config = Self::with(Transport::Direct(kafka), None, None);
        config.service = Some(service.into());
        config
    }

    fn with(transport: Transport, api_url: Option<String>, api_key: Option<String>) -> Self {
        Self {
            transport,
            service: None,
            api_url,
            api_key,
            rules: ClientConfig::default(),
            timeout: Duration::from_secs(10),
            attempts: 5,
            max_backoff: Duration::from_secs(30),
        }
    }

    /// From the environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `MDC_TRANSPORT` | `http` or `direct` | `http` |
    /// | `MDC_URL` | MDC's HTTP API | `http://127.0.0.1:8080` |
    /// | `MDC_API_KEY` | the service's key | none (an open MDC on loopback) |
    /// | `MDC_SERVICE` | the service's name (needed by `direct`) | none |
    /// | `MDC_KAFKA_BROKERS` | bootstrap servers (`direct`) | none |
    /// | `MDC_KAFKA_PREFIX` | topic prefix, as MDC's `backends.queue.prefix` | `mdc` |
    pub fn from_env() -> Result<Self, InvalidSetting> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// As [`Config::from_env`], reading variables through `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, InvalidSetting> {
        let url = var(ENV_URL);
        let key = var(ENV_API_KEY);
        let service = var(ENV_SERVICE);
        let transport = var(ENV_TRANSPORT).unwrap_or_else(|| "http".to_owned());
        let mut config = match transport.trim() {
            "http" => Self::http_from_env(url, key)?,
            "direct" => Self::direct_from_env(&var, url, key)?,
            other => {
                return Err(InvalidSetting::new(
                    ENV_TRANSPORT,
                    format!("must be http or direct, got {other:?}"),
                ))
            }
        };
        if service.is_some() {
            config.service = service;
        }
        config.validate()?;
        Ok(config)
    }

    #[cfg(feature = "http")]
    fn http_from_env(url: Option<String>, key: Option<String>) -> Result<Self, InvalidSetting> {
        Ok(Self::http(
            url.unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
            key,
        ))
    }

    #[cfg(not(feature = "http"))]
    fn http_from_env(_: Option<String>, _: Option<String>) -> Result<Self, InvalidSetting> {
        Err(InvalidSetting::new(
            ENV_TRANSPORT,
            "http needs mdc-client's `http` feature",
        ))
    }

    #[cfg(feature = "direct")]
    fn direct_from_env(
        var: &impl Fn(&str) -> Option<String>,
        url: Option<String>,
        key: Option<String>,
    ) -> Result<Self, InvalidSetting> {
        let brokers = var(ENV_KAFKA_BROKERS).ok_or_else(|| {
            InvalidSetting::new(ENV_KAFKA_BROKERS, "the direct transport needs the brokers")
        })?;
        let prefix = var(ENV_KAFKA_PREFIX).unwrap_or_else(|| "mdc".to_owned());
        let mut config = Self::with(
            Transport::Direct(crate::KafkaConfig::new(&brokers, &prefix)),
            url,
            key,
        );
        config.service = None;
        Ok(config)
    }

    #[cfg(not(feature = "direct"))]
    fn direct_from_env(
        _: &impl Fn(&str) -> Option<String>,
        _: Option<String>,
        _: Option<String>,
    ) -> Result<Self, InvalidSetting> {
        Err(InvalidSetting::new(
            ENV_TRANSPORT,
            "direct needs mdc-client's `direct` feature",
        ))
    }

    /// Errors name the setting (the environment variable) at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.rules.validate()?;
        if self.attempts == 0 {
            return Err(InvalidSetting::new("attempts", "must be at least 1"));
        }
        if let Some(url) = &self.api_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| InvalidSetting::new(ENV_URL, format!("{url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(InvalidSetting::new(
                    ENV_URL,
                    format!("must be an http:// or https:// URL, got {url:?}"),
                ));
            }
        }
        if let Some(key) = &self.api_key {
            if !key.starts_with("mdc_sk_") {
                return Err(InvalidSetting::new(
                    ENV_API_KEY,
                    "is not an MDC API key (they start with mdc_sk_; `mdc keys create` makes one)",
                ));
            }
        }
        if let Some(service) = &self.service {
            if service.is_empty()
                || service.len() > 64
                || !service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(InvalidSetting::new(
                    ENV_SERVICE,
                    "must be 1-64 letters, digits, '-', '_' or '.'",
                ));
            }
        }
        match &self.transport {
            #[cfg(feature = "http")]
            Transport::Http => {
                if self.api_url.is_none() {
                    return Err(InvalidSetting::new(ENV_URL, "the http transport needs it"));
                }
            }
            #[cfg(feature = "direct")]
            Transport::Direct(kafka) => {
                kafka.validate()?;
                if self.service.is_none() {
                    return Err(InvalidSetting::new(
                        ENV_SERVICE,
                        "the direct transport records messages as sent by this service: name it",
                    ));
                }
            }
        }
        Ok(())
    }
}

enum Inner {
    #[cfg(feature = "http")]
    Http,
    #[cfg(feature = "direct")]
    Direct(Box<crate::direct::Direct>),
}

/// Sends messages to MDC and reads what became of them. Cheap to share:
/// hold one per process (in an `Arc`) and call it from any task.
pub struct Client {
    inner: Inner,
    config: Config,
    #[cfg(feature = "http")]
    http: Option<crate::http::Http>,
}

impl Client {
    /// A client from [`Config::from_env`].
    pub async fn from_env() -> Result<Self, InvalidSetting> {
        Self::new(Config::from_env()?).await
    }

    /// Checks the settings and, for the direct transport, that the brokers
    /// answer and MDC's topics exist, so a mistake shows at start-up.
    pub async fn new(config: Config) -> Result<Self, InvalidSetting> {
        config.validate()?;
        #[cfg(feature = "http")]
        let http = match &config.api_url {
            Some(url) => Some(crate::http::Http::new(&config, url)?),
            None => None,
        };
        let inner = match &config.transport {
            #[cfg(feature = "http")]
            Transport::Http => Inner::Http,
            #[cfg(feature = "direct")]
            Transport::Direct(kafka) => Inner::Direct(Box::new(
                crate::direct::Direct::connect(kafka.clone())
                    .await
                    .map_err(|e| InvalidSetting::new(ENV_KAFKA_BROKERS, e.to_string()))?,
            )),
        };
        Ok(Self {
            inner,
            config,
            #[cfg(feature = "http")]
            http,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Validates the message here (an invalid one is refused with the
    /// field named, and nothing is sent), then hands it to MDC. `Ok` means
    /// MDC holds it durably; the outcome follows (see [`Client::status`] and
    /// MDC's webhooks). A message without an idempotency key gets one, so
    /// the client's own retries never make a second message.
    pub async fn send(&self, message: impl Into<SubmitRequest>) -> Result<Sent, SubmitError> {
        let mut request = message.into();
        if request.idempotency_key.is_none() {
            request.idempotency_key = Some(format!("client:{}", ulid::Ulid::new()));
        }
        let (message, warnings) = enrich(&request, &self.config.rules)?;
        match &self.inner {
            #[cfg(feature = "http")]
            Inner::Http => {
                // MDC validates and enriches again, with its own rules, and
                // answers with its own warnings.
                drop((message, warnings));
                let http = self.http.as_ref().ok_or_else(|| {
                    SubmitError::Unavailable("the http transport has no api_url".into())
                })?;
                http.submit(&request).await
            }
            #[cfg(feature = "direct")]
            Inner::Direct(direct) => {
                let mut message = message;
                message.service.clone_from(&self.config.service);
                message.direct = true;
                direct.produce(&message).await?;
                Ok(Sent {
                    id: message.id,
                    warnings,
                    duplicate: false,
                })
            }
        }
    }

    /// Sends several messages at once: one result per message, in order,
    /// each as [`Client::send`] would answer it. Each is validated here
    /// first (an invalid one fails with its field named and is not sent);
    /// over `http` the rest go in as few requests as MDC takes
    /// (`POST /v1/messages/batch`, up to 500 messages each), which costs
    /// MDC far less per message than one request each; over `direct` they
    /// are produced together. A message without an idempotency key gets
    /// one, so retries never make a second message; a key an earlier
    /// message of the call has is refused (`repeated_in_batch`).
    pub async fn send_batch<M: Into<SubmitRequest>>(
        &self,
        messages: impl IntoIterator<Item = M>,
    ) -> Vec<Result<Sent, SubmitError>> {
        let mut results = Vec::new();
        // (index in `results`, request, its enriched message).
        let mut valid = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for message in messages {
            let mut request: SubmitRequest = message.into();
            match &request.idempotency_key {
                None => request.idempotency_key = Some(format!("client:{}", ulid::Ulid::new())),
                Some(key) if !keys.insert(key.clone()) => {
                    results.push(Err(SubmitError::Invalid(crate::ValidationError::new(
                        "idempotency_key",
                        "repeated_in_batch",
                        "an earlier message of this batch has this idempotency key; give each message its own",
                    ))));
                    continue;
                }
                Some(_) => {}
            }
            match enrich(&request, &self.config.rules) {
                Ok((message, warnings)) => {
                    valid.push((results.len(), request, message, warnings));
                    results.push(Err(SubmitError::Unavailable("not sent".into())));
                }
                Err(e) => results.push(Err(e.into())),
            }
        }
        match &self.inner {
            #[cfg(feature = "http")]
            Inner::Http => {
                let Some(http) = self.http.as_ref() else {
                    for (i, ..) in valid {
                        results[i] = Err(SubmitError::Unavailable(
                            "the http transport has no api_url".into(),
                        ));
                    }
                    return results;
                };
                let (slots, requests): (Vec<usize>, Vec<SubmitRequest>) = valid
                    .into_iter()
                    .map(|(i, request, ..)| (i, request))
                    .unzip();
                for (i, result) in slots.into_iter().zip(http.submit_batch(&requests).await) {
                    results[i] = result;
                }
            }
            #[cfg(feature = "direct")]
            Inner::Direct(direct) => {
                use futures::StreamExt as _;
                let produced = valid
                    .into_iter()
                    .map(|(i, _, mut message, warnings)| async move {
                        message.service.clone_from(&self.config.service);
                        message.direct = true;
                        let result = direct.produce(&message).await.map(|()| Sent {
                            id: message.id,
                            warnings,
                            duplicate: false,
                        });
                        (i, result.map_err(SubmitError::from))
                    });
                // At most this many produces awaited at once; the
                // producer batches them on the wire.
                let produced: Vec<_> = futures::stream::iter(produced)
                    .buffer_unordered(256)
                    .collect()
                    .await;
                for (i, result) in produced {
                    results[i] = result;
                }
            }
        }
        results
    }

    /// The message and its timeline (`GET /v1/messages/{id}`), or `None`
    /// when MDC has no such message (yet: a message sent directly is
    /// recorded when a dispatcher takes it, usually within milliseconds).
    pub async fn status(
        &self,
        id: &MessageId,
    ) -> Result<Option<crate::MessageStatus>, StatusError> {
        #[cfg(feature = "http")]
        if let Some(http) = &self.http {
            return http.status(id).await;
        }
        let _ = id;
        Err(StatusError::NoApi)
    }
}
