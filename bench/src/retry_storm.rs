//! `retry-storm`: many retries falling due within a short window on the
//! Redis retry scheduler, with the expired-event subscription off for the
//! whole run (as if every event were lost), so only the sweep fires them.
//! Prints how many fired, how many twice, and how late.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mdc_core::ports::{RetryItem, RetryScheduler};
use mdc_core::{Channel, MessageId, Priority};
use mdc_redis::{RedisRetry, RedisRetryConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Retries to schedule.
    #[arg(long, default_value_t = 100_000)]
    retries: u64,
    /// They fall due evenly over this many seconds.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Takers running at once (dispatcher processes' retry handlers).
    #[arg(long, default_value_t = 4)]
    takers: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let prefix = format!("bench{}", ulid::Ulid::new());
    let mut config = RedisRetryConfig::new(&args.redis, &prefix);
    // The subscriber is gone for the whole run: every expired event is lost.
    config.subscribe = false;
    let retry = std::sync::Arc::new(RedisRetry::connect(config).await?);

    // Scheduling starts the clock: items fall due from `lead` on.
    let lead = Duration::from_secs(5).max(Duration::from_millis(args.retries / 20));
    let start = chrono::Utc::now() + chrono::Duration::from_std(lead)?;
    let step = args.window as f64 * 1_000_000.0 / args.retries.max(1) as f64;
    eprintln!(
        "Scheduling {} retries due over {} s (expired events off: the sweep alone fires them)",
        args.retries, args.window
    );
    let scheduled = Instant::now();
    let mut ids = Vec::with_capacity(args.retries as usize);
    let chunks: Vec<Vec<RetryItem>> = (0..args.retries)
        .map(|i| RetryItem {
            message_id: MessageId::generate(),
            channel: Channel::Sms,
            priority: Priority::Normal,
            due: start + chrono::Duration::microseconds((i as f64 * step) as i64),
        })
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[RetryItem]>::to_vec)
        .collect();
    for chunk in chunks {
        ids.extend(chunk.iter().map(|item| item.message_id.clone()));
        let tasks: Vec<_> = chunk
            .into_iter()
            .map(|item| {
                let retry = retry.clone();
                tokio::spawn(async move { retry.schedule(item).await })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
    }
    eprintln!("  scheduled in {:.1} s", scheduled.elapsed().as_secs_f64());

    let fired = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(MessageId, i64)>::new()));
    let total = args.retries;
    let deadline = Instant::now() + lead + Duration::from_secs(args.window + 60);
    let mut takers = Vec::new();
    for _ in 0..args.takers {
        let (retry, fired) = (retry.clone(), fired.clone());
        takers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if fired.lock().map(|f| f.len() as u64).unwrap_or(0) >= total {
                    break;
                }
                let items = match retry.take_due(256).await {
                    Ok(items) => items,
                    Err(e) => {
                        eprintln!("  take failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let now = chrono::Utc::now();
                for item in items {
                    let late = (now - item.due).num_microseconds().unwrap_or(0);
                    if let Err(e) = retry.complete(&item).await {
                        eprintln!("  complete failed: {e}");
                    }
                    if let Ok(mut f) = fired.lock() {
                        f.push((item.message_id, late));
                    }
                }
            }
        }));
    }
    let progress = {
        let fired = fired.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let n = fired.lock().map(|f| f.len()).unwrap_or(0);
                eprintln!("  fired {n}/{total}");
            }
        })
    };
    for taker in takers {
        taker.await?;
    }
    progress.abort();

    let fired = fired.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let mut seen = HashSet::new();
    let mut twice = 0u64;
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut early = 0u64;
    for (id, late) in &fired {
        if !seen.insert(id.clone()) {
            twice += 1;
        }
        // Redis scores hold milliseconds: up to 1 ms early is rounding.
        if *late < -1000 {
            early += 1;
        }
        lateness.record((*late).max(1) as u64)?;
    }
    let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
    println!("retries scheduled      {}", args.retries);
    println!("fired                  {}", seen.len());
    println!("never fired            {missing}   (target 0)");
    println!("fired more than once   {twice}   (target 0)");
    println!("fired > 1 ms early      {early}   (target 0)");
    crate::print_percentiles("lateness", &lateness, 1, "1000 ms", true);
    Ok(())
}
