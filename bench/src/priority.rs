//! `priority`: critical messages' submit-to-delivered time behind a bulk
//! backlog, on the embedded queue (`--throttled-prefill`) or Kafka
//! (`--direct`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::{print_percentiles, server_with, spawn_config, wait_ready};

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    args: crate::Args,
    /// Bulk messages submitted first.
    #[arg(long, default_value_t = 200_000)]
    backlog: u64,
    /// Critical messages sent after them.
    #[arg(long, default_value_t = 500)]
    critical: u64,
    /// Critical messages per second.
    #[arg(long, default_value_t = 50)]
    critical_rate: u64,
    /// Kafka brokers: run the spawned server on the Kafka queue there
    /// and produce the backlog straight to its bulk topic with the
    /// client's direct transport, faster than it drains.
    #[arg(long)]
    direct: Option<String>,
    /// With --spawn on the embedded queue: submit the backlog while the
    /// simulated SMS vendor takes one message a second, so it builds up,
    /// then restart the server on the same data directory without that
    /// limit and send the critical messages.
    #[arg(long, conflicts_with = "direct")]
    throttled_prefill: bool,
}

/// When a message reached `delivered`, from its trail, and its creation.
fn delivered_after(message: &Value) -> Option<Duration> {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let created = parse(&message["created_at"])?;
    let at = message["events"]
        .as_array()?
        .iter()
        .find(|e| e["status"] == "delivered")
        .and_then(|e| parse(&e["at"]))?;
    (at - created).to_std().ok()
}

async fn submit(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<String> {
    let response = http
        .post(format!("{url}/v1/messages"))
        .json(body)
        .send()
        .await?;
    if response.status().as_u16() != 202 {
        bail!("submit answered {}", response.status());
    }
    let answer: Value = response.json().await?;
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .context("no id in the answer")
}

/// Of `submitted` messages, how many have not yet been sent: counted from
/// the ones that have (messages produced straight to Kafka are recorded
/// only when a dispatcher takes them).
async fn waiting(http: &reqwest::Client, url: &str, submitted: u64) -> anyhow::Result<u64> {
    let stats = crate::stats(http, url).await?;
    let past: u64 = ["sent", "delivered", "failed", "expired", "cancelled"]
        .iter()
        .map(|s| stats["statuses"][s].as_u64().unwrap_or(0))
        .sum();
    Ok(submitted.saturating_sub(past))
}

/// The spawned server's config with the Kafka queue on `brokers` under a
/// fresh topic prefix, for `priority --direct`: the file and the prefix.
fn kafka_config(
    args: &crate::Args,
    brokers: &str,
) -> anyhow::Result<(tempfile::NamedTempFile, String)> {
    let prefix = format!("prio{}", ulid::Ulid::new()).to_lowercase();
    let mut text = match &args.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    text.push_str(&format!(
        "\n[backends.queue]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\nreplication_factor = 1\ncreate_topics = true\n"
    ));
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), text)?;
    Ok((file, prefix))
}

/// `priority`: `backlog` bulk SMS first (as fast as the server takes
/// them), then `critical` OTPs at `rate` per second; each critical
/// message's time from creation to `delivered` comes from its own trail.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let Options {
        mut args,
        backlog,
        critical,
        critical_rate: rate,
        direct,
        throttled_prefill,
    } = options;
    // With --direct the server runs on Kafka and the backlog is produced
    // straight to its bulk topic, faster than it drains.
    let mut _config_file = None;
    let mut client = None;
    if let Some(brokers) = &direct {
        let (file, prefix) = kafka_config(&args, brokers)?;
        args.config = Some(file.path().to_owned());
        _config_file = Some(file);
        let mut kafka = mdc_client::KafkaConfig::new(brokers, &prefix);
        kafka.replication_factor = 1;
        client = Some((kafka, prefix));
    }
    let throttle = match (&args.spawn, throttled_prefill) {
        (_, false) => "",
        (Some(_), true) => THROTTLED_SMS,
        (None, true) => bail!("--throttled-prefill needs --spawn"),
    };
    let (mut url, mut spawned, http) = server_with(&args, throttle).await?;
    let client = match client {
        Some((kafka, _)) => Some(Arc::new(
            mdc_client::Client::new(mdc_client::Config::direct(kafka, "bench")).await?,
        )),
        None => None,
    };
    eprintln!(
        "Submitting {backlog} bulk SMS at concurrency {}{}",
        args.concurrency,
        if client.is_some() {
            " straight to Kafka"
        } else {
            ""
        }
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, url, next, client) = (http.clone(), url.clone(), next.clone(), client.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= backlog {
                    return Ok::<_, anyhow::Error>(());
                }
                let to = format!("+1415556{:04}", i % 10_000);
                let text = "Our spring sale starts today";
                match &client {
                    Some(client) => {
                        client
                            .send(
                                mdc_client::Sms::to(to)
                                    .body(text)
                                    .priority(mdc_client::Priority::Bulk)
                                    .kind(mdc_client::MessageType::Marketing),
                            )
                            .await?;
                    }
                    None => {
                        let body = json!({"channel": "sms", "to": to, "body": text, "type": "marketing", "priority": "bulk"});
                        submit(&http, &url, &body).await?;
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    if let (true, Some(binary), Some(spawned)) = (throttled_prefill, &args.spawn, &mut spawned) {
        eprintln!(
            "  {backlog} bulk accepted in {:.1} s; restarting the server without the limit",
            started.elapsed().as_secs_f64()
        );
        url = spawned.restart(binary, &spawn_config(&args, "")?)?;
        wait_ready(&http, &url).await?;
        // The messages the stopped server had claimed stay leased for
        // `dispatcher.lease`, and the bulk lane waits for them: measure
        // once it drains again, as it would under a live backlog.
        eprintln!("  waiting for the bulk lane to drain again");
        let first = waiting(&http, &url, backlog).await?;
        let since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if first - waiting(&http, &url, backlog).await?.min(first) >= (first / 20).max(1) {
                break;
            }
            if since.elapsed() > Duration::from_secs(args.timeout) {
                bail!("the bulk backlog did not move within {} s", args.timeout);
            }
        }
        eprintln!("  draining after {:.1} s", since.elapsed().as_secs_f64());
    }
    let waiting_before = waiting(&http, &url, backlog).await?;
    eprintln!(
        "  {backlog} bulk accepted in {:.1} s; {waiting_before} still waiting",
        started.elapsed().as_secs_f64()
    );
    eprintln!("Sending {critical} critical OTPs at {rate}/s");
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for i in 0..critical {
        tick.tick().await;
        let body = json!({"channel": "sms", "to": format!("+1415557{:04}", i % 10_000), "body": "Your code is 123456", "type": "otp", "priority": "critical"});
        ids.push(submit(&http, &url, &body).await?);
    }
    let waiting_after = waiting(&http, &url, backlog + critical).await?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    for id in &ids {
        loop {
            let message: Value = http
                .get(format!("{url}/v1/messages/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if let Some(after) = delivered_after(&message) {
                latency.record((after.as_micros() as u64).max(1))?;
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{id} not delivered within {} s: {}",
                    args.timeout,
                    message["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("bulk backlog           {backlog} submitted");
    println!("waiting when critical  {waiting_before} at start, {waiting_after} at end   (the backlog was there throughout when > 0)");
    println!("critical delivered     {}", latency.len());
    print_percentiles("critical", &latency, 1, "100 ms", true);
    Ok(())
}

/// The simulated SMS vendor at one message a second, so a backlog builds
/// on the embedded queue (`priority --throttled-prefill`).
const THROTTLED_SMS: &str =
    "\n[routes.sms]\nmembers = [{ provider = \"sim-sms\", rate_per_second = 1 }]\n";
