//! The `ingest` and `e2e` modes: `--concurrency` workers each keep one
//! `POST /v1/messages` in flight.
//!
//! `ingest`:
//! - accepted msg/s: 202 answers per second during the submit phase;
//! - submit latency p50 / p99 / max, and the slowest connection's first
//!   submit (what a server still loading something at start makes wait);
//! - end-to-end msg/s: messages per second from the first submit until all
//!   of them are `delivered` (polled from `/v1/stats`).
//!
//! `e2e` submits at full speed for a duration and prints delivered msg/s
//! over the second half and whether the backlog grew.
//!
//! With `--webhooks`, a receiver on loopback subscribes to
//! `message.delivered` and answers 200 at once; the program also prints
//! webhook deliveries per second and the latency from each status change
//! (the event's `at`) to its receipt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::recipients::{most_recipients, sms_recipient};
use crate::{post, print_percentiles, sample, server, stats, Args};

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

/// How many results of a batch's answer are 202s.
fn accepted_in(answer: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|answer| {
            answer["results"].as_array().map(|results| {
                results
                    .iter()
                    .filter(|r| r["status"].as_u64() == Some(202))
                    .count() as u64
            })
        })
        .unwrap_or(0)
}

/// How SMS recipients are spread: `count` distinct numbers over
/// `countries` countries.
#[derive(Clone, Copy)]
pub(crate) struct Recipients {
    pub(crate) count: u64,
    pub(crate) countries: u64,
}

fn body(channel: &str, i: u64, recipients: Recipients) -> Value {
    // `n`: the message's number among those of its channel.
    let (channel, n) = match channel {
        "mixed" => (["sms", "email", "push"][(i % 3) as usize], i / 3),
        other => (other, i),
    };
    match channel {
        "email" => {
            json!({"channel": "email", "to": format!("user{i}@example.com"), "from": "bench@example.com", "subject": "Benchmark", "body": "Hello from mdc-bench"})
        }
        "push" => {
            json!({"channel": "push", "to": format!("bench-device-token-{i:08}"), "title": "Benchmark", "body": "Hello from mdc-bench"})
        }
        _ => {
            json!({"channel": "sms", "to": sms_recipient(n % recipients.count, recipients.countries), "body": "Your code is 123456", "type": "otp", "priority": "critical"})
        }
    }
}

async fn delivered(http: &reqwest::Client, url: &str) -> anyhow::Result<(u64, u64)> {
    let stats = stats(http, url).await?;
    let delivered = stats["statuses"]["delivered"].as_u64().unwrap_or(0);
    let terminal: u64 = ["delivered", "failed", "expired", "rejected", "cancelled"]
        .iter()
        .map(|s| stats["statuses"][s].as_u64().unwrap_or(0))
        .sum();
    Ok((delivered, terminal))
}

/// `ingest`, or with `sustain` the `e2e` mode: submit for that long.
pub(crate) async fn run(args: Args, sustain: Option<Duration>) -> anyhow::Result<()> {
    if args.recipients > most_recipients(args.countries) {
        bail!(
            "--recipients {} over --countries {}: at most {} distinct numbers",
            args.recipients,
            args.countries,
            most_recipients(args.countries)
        );
    }
    let (url, spawned, http) = server(&args).await?;
    let sampler = spawned
        .as_ref()
        .map(|s| sample::Sampler::start(s.0.id(), s.1.path().join("data")));
    let idle_rss = match &sampler {
        Some(sampler) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some(sampler.rss_now())
        }
        None => None,
    };
    let (baseline, baseline_terminal) = delivered(&http, &url).await?;
    let backlog = Arc::new(std::sync::Mutex::new(Vec::<(f64, u64, u64)>::new()));
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

    match sustain {
        Some(d) => eprintln!(
            "Submitting {} messages for {} s at concurrency {} to {url}",
            args.channel,
            d.as_secs(),
            args.concurrency
        ),
        None => eprintln!(
            "Submitting {} {} messages at concurrency {} to {url}",
            args.messages, args.channel, args.concurrency
        ),
    }
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu = |sampler: &Option<sample::Sampler>| {
        (
            sample::cpu_seconds("self"),
            sampler.as_ref().map(sample::Sampler::cpu_seconds),
        )
    };
    let cpu_before = cpu(&sampler);
    let start = Instant::now();
    let stop_at = sustain.map(|d| start + d);
    let total = if sustain.is_some() {
        u64::MAX
    } else {
        args.messages
    };
    // Keys unique to this run, so a second run against the same server
    // makes new messages.
    let run = chrono::Utc::now().timestamp_millis();
    let accepted_total = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let mut poster = post::Poster::new(&url)?;
        let (next, errors, accepted_total, channel, keys, recipients, batch) = (
            next.clone(),
            errors.clone(),
            accepted_total.clone(),
            args.channel.clone(),
            args.keys,
            Recipients {
                count: args.recipients,
                countries: args.countries,
            },
            args.batch,
        );
        workers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            // This connection's first accepted submit: a server that is
            // still loading something shows here.
            let mut first_latency = None;
            loop {
                if stop_at.is_some_and(|at| Instant::now() >= at) {
                    break;
                }
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let mut bodies: Vec<Value> = (first..(first + batch).min(total))
                    .map(|i| {
                        let mut body = body(&channel, i, recipients);
                        if keys {
                            body["idempotency_key"] = json!(format!("mdc-bench-{run}-{i}"));
                        }
                        body
                    })
                    .collect();
                let count = bodies.len() as u64;
                let (path, body) = if batch == 1 {
                    ("/v1/messages", bodies.remove(0))
                } else {
                    ("/v1/messages/batch", json!({ "messages": bodies }))
                };
                let body = bytes::Bytes::from(body.to_string());
                let sent = Instant::now();
                let accepted = match poster.post(path, body).await {
                    Ok((202, _)) if batch == 1 => 1,
                    Ok((200, answer)) if batch > 1 => accepted_in(&answer).min(count),
                    _ => 0,
                };
                if accepted > 0 {
                    let micros = sent.elapsed().as_micros() as u64;
                    let _ = histogram.record(micros);
                    first_latency.get_or_insert(micros);
                }
                accepted_total.fetch_add(accepted, Ordering::Relaxed);
                errors.fetch_add(count - accepted, Ordering::Relaxed);
            }
            (histogram, first_latency)
        }));
    }
    // Progress while submitting: submitted, delivered, and the backlog
    // (accepted, not yet finished) every few seconds.
    let progress = {
        let (next, http, url) = (next.clone(), http.clone(), url.clone());
        let backlog = backlog.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let submitted = next.load(Ordering::Relaxed).min(total);
                let (delivered_now, terminal) = delivered(&http, &url).await.unwrap_or((0, 0));
                let waiting = submitted.saturating_sub(terminal.saturating_sub(baseline_terminal));
                if let Ok(mut b) = backlog.lock() {
                    b.push((
                        start.elapsed().as_secs_f64(),
                        waiting,
                        delivered_now - baseline.min(delivered_now),
                    ));
                }
                eprintln!(
                    "  {:>5.0} s: submitted {submitted}, delivered {}, backlog {waiting}",
                    start.elapsed().as_secs_f64(),
                    delivered_now.saturating_sub(baseline)
                );
            }
        })
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut first_latency = 0;
    for worker in workers {
        let (histogram, first) = worker.await?;
        latency.add(histogram)?;
        first_latency = first_latency.max(first.unwrap_or(0));
    }
    let submit_time = start.elapsed();
    let cpu_after = cpu(&sampler);
    if sustain.is_none() {
        progress.abort();
    }
    let accepted = accepted_total.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    if accepted == 0 {
        bail!("no message was accepted ({errors} refused or unanswered)");
    }

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

    progress.abort();
    println!("messages submitted     {}", accepted + errors);
    println!("accepted (202)         {accepted}");
    println!("errors                 {errors}");
    println!("concurrency            {}", args.concurrency);
    if args.batch > 1 {
        println!(
            "messages per request   {} (POST /v1/messages/batch; latency per request)",
            args.batch
        );
    }
    if args.channel == "sms" || args.channel == "mixed" {
        println!(
            "SMS recipients         {} in {} {}",
            args.recipients,
            args.countries,
            if args.countries == 1 {
                "country"
            } else {
                "countries"
            }
        );
    }
    println!(
        "accepted msg/s         {:.0}   (target >= 30000)",
        accepted as f64 / submit_time.as_secs_f64()
    );
    print_percentiles("submit latency", &latency, 2, "10 ms", true);
    println!(
        "first submits          {:.2} ms   (the slowest connection's first)",
        first_latency as f64 / 1000.0
    );
    let per_message = |seconds: f64| seconds * 1e6 / (accepted + errors).max(1) as f64;
    println!(
        "load generator CPU     {:.0} µs per message",
        per_message(cpu_after.0 - cpu_before.0)
    );
    if let (Some(before), Some(after)) = (cpu_before.1, cpu_after.1) {
        println!(
            "server CPU             {:.0} µs per message while submitting (dispatch included)",
            per_message(after - before)
        );
    }
    println!("delivered              {done}");
    println!(
        "end-to-end msg/s       {:.0}   (target >= 10000)",
        done as f64 / end_to_end.as_secs_f64()
    );
    println!("end-to-end time        {:.2} s", end_to_end.as_secs_f64());
    if sustain.is_some() {
        let samples = backlog.lock().map(|b| b.clone()).unwrap_or_default();
        let during: Vec<_> = samples
            .iter()
            .filter(|(at, _, _)| *at <= submit_time.as_secs_f64())
            .collect();
        if let (Some(first), Some(last)) = (during.get(during.len() / 2), during.last()) {
            println!(
                "delivered msg/s, load  {:.0}   (second half of the load)",
                (last.2.saturating_sub(first.2)) as f64 / (last.0 - first.0).max(0.001)
            );
            println!("backlog mid / end      {} / {}", first.1, last.1);
            let half = &during[during.len() / 2..];
            let delivered = (last.2.saturating_sub(first.2)) as f64 / (last.0 - first.0).max(0.001);
            if let Some(slope) = trend(half.iter().map(|(at, waiting, _)| (*at, *waiting as f64))) {
                // A flat backlog moves up and down by the messages in flight;
                // one that grows gains a steady share of the rate.
                let growing = slope > 0.01 * delivered;
                println!(
                    "backlog trend          {slope:+.1} msg/s over the second half   ({}: growing means above 1 % of the delivered rate)",
                    if growing { "growing" } else { "not growing" }
                );
            }
        }
    }
    if let Some(sampler) = &sampler {
        let early = args.idle_wait.min(5);
        tokio::time::sleep(Duration::from_secs(early)).await;
        let soon_after = sampler.rss_now();
        if args.idle_wait > early {
            println!(
                "Leaving the server idle for {} s before taking its RSS",
                args.idle_wait - early
            );
            tokio::time::sleep(Duration::from_secs(args.idle_wait - early)).await;
        }
        let report = sampler.report();
        println!(
            "RSS idle before        {:.1} MB   (target <= 50 MB)",
            idle_rss.unwrap_or(0) as f64 / 1e6
        );
        println!(
            "RSS peak               {:.1} MB   (target <= 256 MB)",
            report.peak_rss as f64 / 1e6
        );
        println!(
            "RSS {early} s after the run   {:.1} MB",
            soon_after as f64 / 1e6
        );
        println!(
            "RSS idle after         {:.1} MB   (target <= 50 MB; {} s after the run)",
            report.rss as f64 / 1e6,
            args.idle_wait
        );
        println!(
            "data directory         {:.1} MB, {:.0} bytes per message   (target <= 1536)",
            report.disk as f64 / 1e6,
            report.disk as f64 / accepted.max(1) as f64
        );
        println!(
            "simulated vendors      {:.1} MB, {:.0} bytes per message   (their ledger, not counted above)",
            report.vendors as f64 / 1e6,
            report.vendors as f64 / accepted.max(1) as f64
        );
    }
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
        print_percentiles("webhook latency", &histogram, 2, "50 ms", false);
    }
    Ok(())
}

/// Prints p50, p99 (beside its target) and, `with_max`, the max of a
/// histogram of microseconds, in milliseconds.
/// The least-squares slope of `points` (y per unit of x), or none for
/// fewer than two distinct x.
fn trend(points: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let points: Vec<(f64, f64)> = points.collect();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if points.len() < 2 || spread <= f64::EPSILON {
        return None;
    }
    let together: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(together / spread)
}

#[cfg(test)]
mod tests {
    use super::{body, trend, Recipients};

    /// In a mixed run every third message is an SMS; they still go to
    /// `recipients` different numbers.
    #[test]
    fn mixed_runs_use_every_sms_recipient() {
        let numbers: std::collections::HashSet<String> = (0..3 * 3_000)
            .map(|i| {
                let recipients = Recipients {
                    count: 3_000,
                    countries: 1,
                };
                body("mixed", i, recipients)
            })
            .filter(|b| b["channel"] == "sms")
            .map(|b| b["to"].as_str().expect("a number").to_owned())
            .collect();
        assert_eq!(numbers.len(), 3_000);
    }

    #[test]
    fn the_trend_is_the_fitted_slope() {
        let line = (0..10).map(|i| (f64::from(i) * 5.0, 300.0 + 2.0 * f64::from(i) * 5.0));
        assert!((trend(line).expect("a slope") - 2.0).abs() < 1e-9);
        // Up and down around a level: no growth.
        let flat = [
            (30.0, 498.0),
            (35.0, 420.0),
            (40.0, 520.0),
            (45.0, 440.0),
            (50.0, 514.0),
            (55.0, 458.0),
        ];
        assert!(trend(flat.into_iter()).expect("a slope").abs() < 5.0);
        assert_eq!(trend([(1.0, 5.0)].into_iter()), None);
        assert_eq!(trend([(1.0, 5.0), (1.0, 7.0)].into_iter()), None);
    }
}
