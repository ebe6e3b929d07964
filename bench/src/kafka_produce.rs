//! `kafka-produce`: the client's direct transport against a bare rdkafka
//! producer with the same settings (acks=all, idempotent), on the same
//! broker and topic, one after the other in one run, each with the same
//! number of sends in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdc_client::{Client, Config, KafkaConfig, MessageType, Priority, Sms, SubmitRequest};
use mdc_core::ports::{QueueLayout, Topic};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Messages per producer.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds; each runs the bare producer, then the client.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
}

fn sms(i: u64) -> SubmitRequest {
    Sms::to(format!("+1415555{:04}", 1000 + i % 8000))
        .body("Your code is 123456")
        .priority(Priority::Critical)
        .kind(MessageType::Otp)
        .into()
}

/// Runs `send(i)` for every i with `concurrency` in flight; msg/s.
async fn drive<F, Fut>(messages: u64, concurrency: usize, send: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, send) = (next.clone(), send.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return Ok::<_, anyhow::Error>(());
                }
                send(i).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let prefix = format!("bench{}", ulid::Ulid::new());
    let mut kafka = KafkaConfig::new(&args.brokers, &prefix);
    kafka.replication_factor = 1;
    mdc_kafka::create_topics(&kafka, &QueueLayout::default()).await?;
    let topic = kafka.topic_name(Topic::Messages(mdc_core::Channel::Sms, Priority::Critical));
    let client = Arc::new(Client::new(Config::direct(kafka.clone(), "bench")).await?);
    // The same settings as the client's producer.
    let bare: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "10000")
        .create()?;
    // The same payload size as the client's records.
    let payload = {
        let (message, _) = mdc_client::enrich(&sms(0), &mdc_client::ClientConfig::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Arc::new(message.encode())
    };
    eprintln!(
        "{} messages per producer, {} in flight, topic {topic} ({} bytes per record)",
        args.messages,
        args.concurrency,
        payload.len()
    );
    let mut best_bare = 0f64;
    let mut best_client = 0f64;
    for round in 1..=args.rounds {
        let rate = {
            let (bare, topic, payload) = (bare.clone(), topic.clone(), payload.clone());
            drive(args.messages, args.concurrency, move |i| {
                let (bare, topic, payload) = (bare.clone(), topic.clone(), payload.clone());
                async move {
                    let key = format!("+1415555{:04}", 1000 + i % 8000);
                    bare.send(
                        FutureRecord::to(&topic)
                            .key(&key)
                            .payload(payload.as_slice()),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("bare produce: {e}"))?;
                    Ok(())
                }
            })
            .await?
        };
        eprintln!("  round {round}: bare rdkafka {rate:.0} msg/s");
        best_bare = best_bare.max(rate);
        let rate = {
            let client = client.clone();
            drive(args.messages, args.concurrency, move |i| {
                let client = client.clone();
                async move {
                    client.send(sms(i)).await?;
                    Ok(())
                }
            })
            .await?
        };
        eprintln!("  round {round}: mdc-client direct {rate:.0} msg/s");
        best_client = best_client.max(rate);
    }
    println!("bare rdkafka msg/s     {best_bare:.0}");
    println!("mdc-client msg/s       {best_client:.0}");
    println!(
        "ratio                  {:.2}   (target >= 0.80)",
        best_client / best_bare.max(1.0)
    );
    Ok(())
}
