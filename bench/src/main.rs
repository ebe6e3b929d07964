//! Drives `mdc serve` over HTTP and prints what it sustained:
//!
//! - accepted msg/s: 202 answers per second during the submit phase;
//! - submit latency p50 / p99 / max;
//! - end-to-end msg/s: messages per second from the first submit until all
//!   of them are `delivered` (polled from `/v1/stats`).
//!
//! With `--webhooks`, a receiver on loopback subscribes to
//! `message.delivered` and answers 200 at once; the program also prints
//! webhook deliveries per second and the latency from each status change
//! (the event's `at`) to its receipt.
//!
//! `--spawn PATH` starts a fresh server from the binary at PATH on a free port
//! with an empty data directory, so one command measures a clean run.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "mdc-bench", about = "Load generator for mdc serve")]
struct Args {
    /// Base URL of a running server (ignored with --spawn).
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
}

/// What the webhook receiver saw: receipt times and latencies (µs).
#[derive(Default)]
struct Receipts {
    first: Option<Instant>,
    last: Option<Instant>,
    latency: Vec<u64>,
}

/// Starts a receiver that answers 200 at once; returns its URL.
fn start_receiver(receipts: Arc<std::sync::Mutex<Receipts>>) -> anyhow::Result<String> {
    let data = actix_web::web::Data::from(receipts);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .default_service(actix_web::web::to(
                |body: actix_web::web::Bytes,
                 receipts: actix_web::web::Data<std::sync::Mutex<Receipts>>| async move {
                    let now = chrono::Utc::now();
                    let at = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|e| e["at"].as_str().map(str::to_owned))
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok());
                    let mut r = receipts.lock().unwrap_or_else(|p| p.into_inner());
                    let instant = Instant::now();
                    r.first.get_or_insert(instant);
                    r.last = Some(instant);
                    if let Some(at) = at {
                        let micros = (now - at.with_timezone(&chrono::Utc))
                            .num_microseconds()
                            .unwrap_or(0)
                            .max(1);
                        r.latency.push(micros as u64);
                    }
                    actix_web::HttpResponse::Ok().finish()
                },
            ))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))?;
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    Ok(format!("http://127.0.0.1:{port}/hook"))
}

/// The server process and its data directory, removed when dropped.
struct Spawned(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn body(channel: &str, i: u64) -> Value {
    let channel = match channel {
        "mixed" => ["sms", "email", "push"][(i % 3) as usize],
        other => other,
    };
    match channel {
        "email" => {
            json!({"channel": "email", "to": format!("user{i}@example.com"), "from": "bench@example.com", "subject": "Benchmark", "body": "Hello from mdc-bench"})
        }
        "push" => {
            json!({"channel": "push", "to": format!("bench-device-token-{i:08}"), "title": "Benchmark", "body": "Hello from mdc-bench"})
        }
        _ => {
            json!({"channel": "sms", "to": format!("+1415555{:04}", 1000 + i % 8000), "body": "Your code is 123456", "type": "otp", "priority": "critical"})
        }
    }
}

async fn delivered(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, u64)> {
    let stats: Value = http
        .get(format!("{url}/v1/stats"))
        .send()
        .await?
        .json()
        .await?;
    let delivered = stats["statuses"]["delivered"].as_u64().unwrap_or(0);
    let terminal: u64 = ["delivered", "failed", "expired", "rejected", "cancelled"]
        .iter()
        .map(|s| stats["statuses"][s].as_u64().unwrap_or(0))
        .sum();
    Ok((delivered, terminal))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut _spawned = None;
    let url = match &args.spawn {
        Some(binary) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let dir = tempfile::tempdir()?;
            let mut command = Command::new(binary);
            command
                .args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                ])
                .arg(dir.path().join("data"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null());
            let mut config = match &args.config {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => String::new(),
            };
            if args.webhooks {
                config.push_str("\n[webhooks]\nallow_private_urls = true\n");
            }
            let config_path = dir.path().join("bench.toml");
            std::fs::write(&config_path, config)?;
            command.arg("--config").arg(&config_path);
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            _spawned = Some(Spawned(child, dir));
            format!("http://127.0.0.1:{port}")
        }
        None => args.url.trim_end_matches('/').to_owned(),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let ready = Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        if ready.elapsed() > Duration::from_secs(20) {
            bail!("no server answering at {url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (baseline, _) = delivered(&http, &url).await?;
    let receipts = Arc::new(std::sync::Mutex::new(Receipts::default()));
    if args.webhooks {
        let hook = start_receiver(receipts.clone())?;
        let response = http
            .post(format!("{url}/v1/webhooks"))
            .json(
                &json!({"url": hook, "events": ["message.delivered"], "description": "mdc-bench"}),
            )
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            bail!(
                "could not register the webhook receiver: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }

    eprintln!(
        "Submitting {} {} messages at concurrency {} to {url}",
        args.messages, args.channel, args.concurrency
    );
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, url, next, errors, channel, total) = (
            http.clone(),
            url.clone(),
            next.clone(),
            errors.clone(),
            args.channel.clone(),
            args.messages,
        );
        workers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let sent = Instant::now();
                let response = http
                    .post(format!("{url}/v1/messages"))
                    .json(&body(&channel, i))
                    .send()
                    .await;
                let ok = match response {
                    Ok(r) => r.status().as_u16() == 202 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    let _ = histogram.record(sent.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            histogram
        }));
    }
    // Progress while submitting.
    let progress = {
        let next = next.clone();
        let total = args.messages;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "  submitted {}/{total}",
                    next.load(Ordering::Relaxed).min(total)
                );
            }
        })
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for worker in workers {
        latency.add(worker.await?)?;
    }
    let submit_time = start.elapsed();
    progress.abort();
    let accepted = latency.len();
    let errors = errors.load(Ordering::Relaxed);

    eprintln!("Waiting for {accepted} messages to be delivered");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last_report = Instant::now();
    let (end_to_end, done) = loop {
        let (delivered_now, _) = delivered(&http, &url).await?;
        let done = delivered_now.saturating_sub(baseline);
        if done >= accepted {
            break (start.elapsed(), done);
        }
        if Instant::now() > deadline {
            eprintln!("  gave up: {done}/{accepted} delivered");
            break (start.elapsed(), done);
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("  delivered {done}/{accepted}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let ms = |us: u64| us as f64 / 1000.0;
    println!("messages submitted     {}", args.messages);
    println!("accepted (202)         {accepted}");
    println!("errors                 {errors}");
    println!("concurrency            {}", args.concurrency);
    println!(
        "accepted msg/s         {:.0}",
        accepted as f64 / submit_time.as_secs_f64()
    );
    println!(
        "submit latency p50     {:.2} ms",
        ms(latency.value_at_quantile(0.50))
    );
    println!(
        "submit latency p99     {:.2} ms",
        ms(latency.value_at_quantile(0.99))
    );
    println!("submit latency max     {:.2} ms", ms(latency.max()));
    println!("delivered              {done}");
    println!(
        "end-to-end msg/s       {:.0}",
        done as f64 / end_to_end.as_secs_f64()
    );
    println!("end-to-end time        {:.2} s", end_to_end.as_secs_f64());
    if args.webhooks {
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        loop {
            let got = receipts.lock().map(|r| r.latency.len()).unwrap_or(0) as u64;
            if got >= done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = receipts
            .lock()
            .map_err(|_| anyhow::anyhow!("receipts lock"))?;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for &micros in &r.latency {
            histogram.record(micros.min(600_000_000))?;
        }
        let span = match (r.first, r.last) {
            (Some(first), Some(last)) => (last - first).as_secs_f64().max(0.001),
            _ => 1.0,
        };
        println!("webhook deliveries     {}", r.latency.len());
        println!(
            "webhook deliveries/s   {:.0}   (target >= 5000)",
            r.latency.len() as f64 / span
        );
        println!(
            "webhook latency p50    {:.2} ms",
            ms(histogram.value_at_quantile(0.50))
        );
        println!(
            "webhook latency p99    {:.2} ms   (target <= 50 ms)",
            ms(histogram.value_at_quantile(0.99))
        );
    }
    Ok(())
}
