//! Command-line arguments and the `send` / `status` client commands, which
//! talk to a running server over its HTTP API.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "mdc",
    version,
    about = "Message Distribution Center: send SMS, email and push, and see what became of each message"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run MDC: every role in one process by default (embedded backends,
    /// simulated vendors), or the roles named by --roles.
    Serve(ServeArgs),
    /// Manage the Kafka topics of the configured queue.
    Topics {
        #[command(subcommand)]
        action: TopicsCommand,
    },
    /// Submit a message to a running server and print its id.
    Send {
        #[command(subcommand)]
        message: SendCommand,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Run a vendor simulator as its own HTTP server.
    Simulate {
        #[command(subcommand)]
        vendor: SimulateCommand,
    },
    /// Print a message's status and timeline.
    Status {
        /// The message id (msg_…).
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Manage the webhook endpoints of a running server.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksCommand,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Manage API keys: through a running server (with an admin key), or
    /// with --direct in the configured store (the first key; an embedded
    /// store only while the server is stopped).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        direct: DirectArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (shown only now).
    Create {
        /// The internal service the key speaks for (a-z, 0-9, -, _).
        #[arg(long)]
        service: String,
        /// Comma-separated: send, read, read:pii, admin.
        #[arg(long)]
        scopes: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the keys (never their secrets).
    List,
    /// Revoke a key: it stops working at once.
    Revoke {
        /// The key id (key_…).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct DirectArgs {
    /// Use the configured store itself instead of a running server.
    #[arg(long, global = true)]
    pub direct: bool,
    /// With --direct: the TOML config file naming the store.
    #[arg(long, global = true, requires = "direct")]
    pub config: Option<PathBuf>,
    /// With --direct: the embedded backends' data directory [default: ./data]
    #[arg(long, global = true, requires = "direct")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List the endpoints.
    List,
    /// Create an endpoint and print it with its secret (shown once).
    Create {
        /// Where to deliver: an https URL.
        url: String,
        /// Event types to deliver (message.delivered, message.failed, ...);
        /// repeat the flag for several; none means all.
        #[arg(long = "event")]
        events: Vec<String>,
        /// Channels to deliver (sms, email, push); none means all.
        #[arg(long = "channel")]
        channels: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Print an endpoint's latest delivery attempts.
    Attempts {
        /// The endpoint id (wh_…).
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every missing topic with the configured partitions
    /// (idempotent: existing topics are reported and left as they are).
    Create {
        /// TOML config file with a `[backends.queue]` of kind "kafka".
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Kaleyra's v1 SMS API: sends, callbacks, status pull, fault injection.
    Kaleyra(KaleyraSimArgs),
}

#[derive(Debug, Args)]
pub struct KaleyraSimArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    /// The api-key the simulator accepts.
    #[arg(long, env = "KALEYRA_SIM_API_KEY", default_value = "sim-key")]
    pub api_key: String,
    /// Delay before the delivery callback.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub callback_delay: std::time::Duration,
    /// Relative weight of delivered outcomes.
    #[arg(long, default_value_t = 100)]
    pub delivered: u32,
    /// Relative weight of failed outcomes.
    #[arg(long, default_value_t = 0)]
    pub failed: u32,
    /// Relative weight of undelivered outcomes.
    #[arg(long, default_value_t = 0)]
    pub undelivered: u32,
    /// Added before answering each send.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: std::time::Duration,
    /// Percentage of sends answered 503.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub error_percent: u8,
    /// Percentage of sends answered 429.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub throttle_percent: u8,
    /// Percentage of sends accepted whose connection is then cut.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_percent: u8,
    /// Decide outcomes without calling back: only the status API tells them.
    #[arg(long)]
    pub no_callbacks: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the HTTP API [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory for the embedded backends' data [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (see mdc.example.toml)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Roles to run, comma-separated [default: all]. Running only some
    /// needs shared backends (Kafka queue, MongoDB store, Redis retries).
    #[arg(long, value_enum, value_delimiter = ',', env = "MDC_ROLES")]
    pub roles: Vec<crate::Role>,
    /// Log lines as text for people, or one JSON object each for a log
    /// pipeline.
    #[arg(long, value_enum, default_value = "text", env = "MDC_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServerArg {
    /// Base URL of the MDC server.
    #[arg(
        long,
        env = "MDC_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// API key to send (Authorization: Bearer).
    #[arg(long, env = "MDC_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct Common {
    /// critical, normal or bulk
    #[arg(long)]
    priority: Option<String>,
    /// otp, transactional or marketing
    #[arg(long = "type")]
    message_type: Option<String>,
    /// Makes a retried submission return the first one instead of sending twice.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SendCommand {
    Sms {
        #[arg(long)]
        to: String,
        #[arg(long)]
        body: String,
        /// Sender id overriding the configured one.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    Email {
        #[arg(long)]
        to: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        body: Option<String>,
        #[arg(long)]
        html: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    Push {
        /// Device token, or user:<id>.
        #[arg(long)]
        to: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        body: String,
        /// Custom data as a JSON object.
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

impl SendCommand {
    fn body(&self) -> anyhow::Result<Value> {
        let (mut body, common) = match self {
            SendCommand::Sms {
                to,
                body,
                from,
                common,
            } => (
                json!({"channel": "sms", "to": to, "body": body, "from": from}),
                common,
            ),
            SendCommand::Email {
                to,
                from,
                subject,
                body,
                html,
                common,
            } => (
                json!({"channel": "email", "to": to, "from": from, "subject": subject, "body": body, "html": html}),
                common,
            ),
            SendCommand::Push {
                to,
                title,
                body,
                data,
                common,
            } => {
                let data: Option<Value> = match data {
                    Some(text) => {
                        Some(serde_json::from_str(text).context("--data must be a JSON object")?)
                    }
                    None => None,
                };
                (
                    json!({"channel": "push", "to": to, "title": title, "body": body, "data": data}),
                    common,
                )
            }
        };
        body["priority"] = json!(common.priority);
        body["type"] = json!(common.message_type);
        body["idempotency_key"] = json!(common.idempotency_key);
        if let Value::Object(map) = &mut body {
            map.retain(|_, v| !v.is_null());
        }
        Ok(body)
    }
}

fn client(server: &ServerArg) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &server.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("--api-key holds characters a header cannot")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .default_headers(headers)
        .build()?)
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = &body["error"];
        let field = error["field"]
            .as_str()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        bail!(
            "{status}: {field}{}",
            error["message"].as_str().unwrap_or("request failed")
        );
    }
    Ok(body)
}

pub async fn send(message: &SendCommand, server: &ServerArg) -> anyhow::Result<()> {
    let url = format!("{}/v1/messages", server.server.trim_end_matches('/'));
    let response = client(server)?
        .post(&url)
        .json(&message.body()?)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let body = answer(response).await?;
    for warning in body["warnings"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: {}: {}",
            warning["field"].as_str().unwrap_or(""),
            warning["message"].as_str().unwrap_or("")
        );
    }
    println!("{}", body["id"].as_str().unwrap_or_default());
    Ok(())
}

pub async fn status(id: &str, server: &ServerArg) -> anyhow::Result<()> {
    let url = format!("{}/v1/messages/{id}", server.server.trim_end_matches('/'));
    let response = client(server)?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let body = answer(response).await?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!(
        "{}  {}  {} {} to {}",
        text(&body["id"]),
        text(&body["status"]).to_uppercase(),
        text(&body["priority"]),
        text(&body["channel"]),
        text(&body["to"])
    );
    for event in body["events"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  {}  {:<17} {}",
            text(&event["at"]),
            text(&event["component"]),
            text(&event["details"])
        );
        if let Some(provider) = event["provider"].as_str() {
            line.push_str(&format!("  [{provider}"));
            if let Some(id) = event["provider_message_id"].as_str() {
                line.push_str(&format!(" {id}"));
            }
            line.push(']');
        }
        if let Some(error) = event["error"].as_str() {
            line.push_str(&format!("  error: {error}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// `mdc webhooks …`: the webhook API, printed for people.
pub async fn webhooks(action: &WebhooksCommand, server: &ServerArg) -> anyhow::Result<()> {
    let base = format!("{}/v1/webhooks", server.server.trim_end_matches('/'));
    let http = client(server)?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    match action {
        WebhooksCommand::List => {
            let body = answer(
                http.get(&base)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?,
            )
            .await?;
            for endpoint in body["webhooks"].as_array().into_iter().flatten() {
                let state = if endpoint["enabled"] == true {
                    "enabled".to_owned()
                } else {
                    format!("disabled ({})", text(&endpoint["disabled"]["reason"]))
                };
                println!(
                    "{}  {}  {}  events={} channels={}",
                    text(&endpoint["id"]),
                    text(&endpoint["url"]),
                    state,
                    endpoint["events"],
                    endpoint["channels"]
                );
            }
        }
        WebhooksCommand::Create {
            url,
            events,
            channels,
            description,
        } => {
            let body = answer(
                http.post(&base)
                    .json(&json!({
                        "url": url, "events": events, "channels": channels, "description": description
                    }))
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?,
            )
            .await?;
            println!("{}", text(&body["id"]));
            println!("secret: {} (shown only now)", text(&body["secret"]));
        }
        WebhooksCommand::Attempts { id, limit } => {
            let url = format!("{base}/{id}/attempts?limit={limit}");
            let body = answer(
                http.get(&url)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?,
            )
            .await?;
            for attempt in body["attempts"].as_array().into_iter().flatten() {
                let outcome = match attempt["status"].as_u64() {
                    Some(status) => status.to_string(),
                    None => format!("error: {}", text(&attempt["error"])),
                };
                println!(
                    "{}  {}  try {}  {}  {} ms",
                    text(&attempt["at"]),
                    text(&attempt["event_id"]),
                    attempt["attempt"],
                    outcome,
                    attempt["latency_ms"]
                );
            }
        }
    }
    Ok(())
}

/// `mdc topics create`: creates the queue's topics on Kafka.
pub async fn create_topics(config: &crate::Config) -> anyhow::Result<()> {
    let crate::backends::QueueBackend::Kafka(kafka) = &config.backends.queue else {
        bail!("backends.queue is not kafka: the embedded queue needs no topics");
    };
    let outcomes = mdc_kafka::create_topics(kafka, &config.queue_layout())
        .await
        .context("creating the Kafka topics")?;
    for outcome in outcomes {
        println!("{outcome}");
    }
    Ok(())
}

fn print_key(key: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let scopes: Vec<String> = key["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let state = match key["revoked_at"].as_str() {
        Some(at) => format!("revoked {at}"),
        None => "active".to_owned(),
    };
    println!(
        "{}  {}  {}  {}  created {}  {}",
        text(&key["id"]),
        text(&key["service"]),
        scopes.join(","),
        state,
        text(&key["created_at"]),
        key["description"].as_str().unwrap_or_default()
    );
}

/// `mdc keys …` through a running server's `/v1/keys`.
pub async fn keys(action: &KeysCommand, server: &ServerArg) -> anyhow::Result<()> {
    let base = format!("{}/v1/keys", server.server.trim_end_matches('/'));
    let http = client(server)?;
    let reach = || format!("cannot reach {base}");
    match action {
        KeysCommand::Create {
            service,
            scopes,
            description,
        } => {
            let scopes =
                crate::auth::parse_scopes(scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let body = answer(
                http.post(&base)
                    .json(
                        &json!({"service": service, "scopes": scopes, "description": description}),
                    )
                    .send()
                    .await
                    .with_context(reach)?,
            )
            .await?;
            print_created(&body["id"], &body["secret"]);
        }
        KeysCommand::List => {
            let body = answer(http.get(&base).send().await.with_context(reach)?).await?;
            for key in body["keys"].as_array().into_iter().flatten() {
                print_key(key);
            }
        }
        KeysCommand::Revoke { id } => {
            let url = format!("{base}/{id}");
            let response = http.delete(&url).send().await.with_context(reach)?;
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                println!("revoked {id}");
            } else {
                answer(response).await?;
            }
        }
    }
    Ok(())
}

fn print_created(id: &Value, secret: &Value) {
    println!("{}", id.as_str().unwrap_or("-"));
    eprintln!("The key is shown only now; keep it in your secret store:");
    println!("{}", secret.as_str().unwrap_or("-"));
}

/// `mdc keys … --direct`: in the configured store, without a server.
pub async fn keys_direct(
    action: &KeysCommand,
    keys: std::sync::Arc<dyn mdc_core::ports::ApiKeys>,
) -> anyhow::Result<()> {
    match action {
        KeysCommand::Create {
            service,
            scopes,
            description,
        } => {
            let scopes =
                crate::auth::parse_scopes(scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let (key, secret) = crate::auth::issue(service, scopes, description)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            keys.create(&key).await.context("storing the key")?;
            print_created(&json!(key.id), &json!(secret));
        }
        KeysCommand::List => {
            for key in keys.list().await.context("reading the keys")? {
                print_key(&crate::keys_api::shown(&key));
            }
        }
        KeysCommand::Revoke { id } => {
            if !keys
                .revoke(id, mdc_core::now())
                .await
                .context("revoking the key")?
            {
                bail!("no active key {id}");
            }
            println!("revoked {id} (servers stop accepting it within 2 s)");
        }
    }
    Ok(())
}
