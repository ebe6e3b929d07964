//! Command-line arguments; the commands that talk to a running server over
//! its HTTP API (`send`, `status`, `webhooks`, `keys`) are in `cli/commands.rs`,
//! `compact` in `cli/compact.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod commands;
mod compact;

pub use commands::{create_topics, keys, keys_direct, send, status, webhooks};
pub use compact::compact;

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
    /// Give the embedded data directory's files back the space retention
    /// freed in them (they never shrink on their own). Only while mdc
    /// serve is stopped.
    Compact {
        /// The TOML config file naming the data directory.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The embedded backends' data directory [default: ./data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
