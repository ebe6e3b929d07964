//! Benchmarks of MDC, one mode per target of `docs/benchmarks.md`; each
//! prints its figures next to the target.
//!
//! - `ingest` and `e2e` drive `mdc serve` over HTTP ([`load`]);
//! - `priority`: critical messages' time to `delivered` behind a bulk backlog;
//! - `retry-storm`: retries falling due together on Redis with expired
//!   events lost;
//! - `kafka-produce`: the client's direct transport against bare rdkafka;
//! - `store`: the embedded store alone, CPU per delivered message;
//! - `phones`: validating SMS recipients, MDC's way against `phonenumber`'s.
//!
//! With `--spawn`, the HTTP modes also sample the server's memory (idle and
//! peak RSS) and its data directory (bytes per message).
//!
//! `--spawn PATH` starts a fresh server from the binary at PATH on a free port
//! with an empty data directory, so one command measures a clean run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::Value;

mod kafka_produce;
mod load;
mod phones;
mod post;
mod priority;
mod recipients;
mod retry_storm;
mod sample;
mod store;

/// The server's allocator, so the `store` mode measures what it would cost there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "mdc-bench",
    about = "Benchmarks of MDC: each mode prints its figures and the target"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Accepted msg/s and submit latency over HTTP, then end-to-end msg/s
    /// until every message is delivered.
    Ingest(Args),
    /// Submits at full speed for --duration seconds; delivered msg/s and
    /// the backlog over time.
    E2e {
        #[command(flatten)]
        args: Args,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Critical messages' submit-to-delivered time behind a bulk backlog.
    Priority(priority::Options),
    /// Retries falling due together on Redis, expired events lost.
    RetryStorm(retry_storm::Args),
    /// The client's direct transport against a bare rdkafka producer.
    KafkaProduce(kafka_produce::Args),
    /// The embedded store alone: a delivered message's writes, CPU per message.
    Store(store::Args),
    /// Validating SMS recipients: MDC's validator against phonenumber's own.
    Phones(phones::Args),
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Base URL of a running server, http:// (ignored with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Start a fresh server from this mdc binary instead of using --url.
    #[arg(long)]
    spawn: Option<std::path::PathBuf>,
    /// Extra TOML config for the spawned server.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages to submit.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// sms, email, push or mixed.
    #[arg(long, default_value = "sms")]
    channel: String,
    /// Give up waiting for delivery after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Also measure webhook fan-out: one endpoint on loopback receiving
    /// every `message.delivered` (a spawned server is configured to allow
    /// it; a running one needs `webhooks.allow_private_urls = true`).
    #[arg(long)]
    webhooks: bool,
    /// With --spawn: seconds to leave the server idle after the run before
    /// taking its idle RSS (freed memory returns to the system over about
    /// ten seconds).
    #[arg(long, default_value_t = 30)]
    idle_wait: u64,
    /// Give every message its own idempotency key, as the client crate
    /// does (without, the server makes one).
    #[arg(long)]
    keys: bool,
    /// Distinct SMS recipients, written to in turn (at most 7,990,000 US
    /// numbers, or a million a country with --countries): repeated
    /// recipients, as in real traffic, or one per message.
    #[arg(long, default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..=recipients::MAX_RECIPIENTS))]
    recipients: u64,
    /// Countries the SMS recipients are spread over, in turn (the US, then
    /// 24 others; at most a million numbers each): numbers of many
    /// countries, as a service with customers abroad sends to.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=recipients::MAX_COUNTRIES))]
    countries: u64,
    /// Messages per request: 1 posts each to /v1/messages, more post them
    /// together to /v1/messages/batch (at most 500).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=500))]
    batch: u64,
}

/// The server process and its data directory, removed when dropped.
struct Spawned(Child, tempfile::TempDir);

impl Spawned {
    /// Stops the server at once (SIGKILL: nothing is drained) and starts
    /// `binary` again on the same data directory with `config`; its URL.
    fn restart(&mut self, binary: &std::path::Path, config: &str) -> anyhow::Result<String> {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let (child, url) = start(binary, self.1.path(), config)?;
        self.0 = child;
        Ok(url)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The server's `/v1/stats`: messages per status. A request that failed
/// on its way (a connection the server closed as it was reused, a timeout)
/// is tried again, twice at most: the read changes nothing.
async fn stats(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let mut tries = 0;
    let response = loop {
        match http.get(format!("{url}/v1/stats")).send().await {
            Err(e) if e.is_request() && tries < 2 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent => break sent?,
        }
    };
    Ok(response.json().await?)
}

fn main() -> anyhow::Result<()> {
    let mode = Cli::parse().mode;
    // The submitting modes share the machine's cores with the server under
    // test: on one thread, a request costs the generator less (no work
    // stealing or waking across threads), which leaves more to the server.
    // With `--webhooks` the receiver's latency is measured, so it gets
    // threads of its own.
    let one_thread = match &mode {
        Mode::Ingest(args) | Mode::E2e { args, .. } => !args.webhooks,
        _ => false,
    };
    let runtime = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()?;
    runtime.block_on(async move {
        match mode {
            Mode::Ingest(args) => load::run(args, None).await,
            Mode::E2e { args, duration } => {
                load::run(args, Some(Duration::from_secs(duration))).await
            }
            Mode::Priority(args) => priority::run(args).await,
            Mode::RetryStorm(args) => retry_storm::run(args).await,
            Mode::KafkaProduce(args) => kafka_produce::run(args).await,
            Mode::Store(args) => store::run(args).await,
            Mode::Phones(args) => phones::run(args),
        }
    })
}

/// The server under test: started fresh with `--spawn`, or `--url`.
async fn server(args: &Args) -> anyhow::Result<(String, Option<Spawned>, reqwest::Client)> {
    server_with(args, "").await
}

/// The server's config file: `--config`'s, `extra`, and what `--webhooks`
/// needs.
fn spawn_config(args: &Args, extra: &str) -> anyhow::Result<String> {
    let mut config = match &args.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    config.push_str(extra);
    if args.webhooks {
        config.push_str("\n[webhooks]\nallow_private_urls = true\n");
    }
    Ok(config)
}

/// Starts `binary` on a free port with its data in `dir/data`; its URL.
fn start(
    binary: &std::path::Path,
    dir: &std::path::Path,
    config: &str,
) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, config)?;
    let child = Command::new(binary)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// [`server`] with `extra` appended to a spawned server's config.
async fn server_with(
    args: &Args,
    extra: &str,
) -> anyhow::Result<(String, Option<Spawned>, reqwest::Client)> {
    let mut spawned = None;
    let url = match &args.spawn {
        Some(binary) => {
            let dir = tempfile::tempdir()?;
            let (child, url) = start(binary, dir.path(), &spawn_config(args, extra)?)?;
            spawned = Some(Spawned(child, dir));
            url
        }
        None => args.url.trim_end_matches('/').to_owned(),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        // Under the server's keep-alive (5 s), so an idle connection is
        // dropped here before the server closes it: reused as the server
        // closes it, a request fails with "connection reset" (seen on a slow
        // server, under valgrind).
        .pool_idle_timeout(Duration::from_secs(4))
        .timeout(Duration::from_secs(30))
        .build()?;
    wait_ready(&http, &url).await?;
    Ok((url, spawned, http))
}

async fn wait_ready(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let ready = Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        if ready.elapsed() > Duration::from_secs(20) {
            bail!("no server answering at {url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub(crate) fn print_percentiles(
    name: &str,
    histogram: &Histogram<u64>,
    decimals: usize,
    p99_target: &str,
    with_max: bool,
) {
    let ms = |us: u64| us as f64 / 1000.0;
    let label = |what: &str| format!("{:<23}", format!("{name} {what}"));
    println!(
        "{}{:.decimals$} ms",
        label("p50"),
        ms(histogram.value_at_quantile(0.5))
    );
    println!(
        "{}{:.decimals$} ms   (target <= {p99_target})",
        label("p99"),
        ms(histogram.value_at_quantile(0.99))
    );
    if with_max {
        println!("{}{:.decimals$} ms", label("max"), ms(histogram.max()));
    }
}
