//! `store`: the embedded message store on its own, without HTTP, queue or
//! vendors. Each of `--concurrency` tasks takes messages through the writes
//! a delivered SMS costs the store (create, claim, `sent`, `delivered`),
//! so the figures are the store's share of the end-to-end cost: messages
//! per second, and the process's CPU time per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mdc_core::message::{Content, SmsEncoding};
use mdc_core::ports::{Claim, Created, Store, Transition, Updated};
use mdc_core::{Event, Message, MessageId, MessageRecord, MessageType, Priority, Status};
use mdc_embedded::{Db, EmbeddedStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages taken through their lifecycle.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Separate store files, messages spread over them.
    #[arg(long, default_value_t = 1)]
    files: usize,
}

/// A one-segment SMS as the client produces it.
fn sms(i: u64) -> Message {
    let now = mdc_core::now();
    let id = MessageId::generate();
    Message {
        idempotency_key: Message::own_idempotency_key(&id),
        id,
        priority: Priority::Critical,
        message_type: MessageType::Otp,
        to: format!("+1415555{:04}", 1000 + i % 8000),
        sender: Some("MDC".to_owned()),
        content: Content::Sms {
            body: "Your code is 123456".to_owned(),
            encoding: SmsEncoding::Gsm7,
            segments: 1,
            template_id: None,
        },
        created_at: now,
        deadline: now + chrono::Duration::minutes(10),
        reference: None,
        metadata: None,
        service: None,
        direct: false,
    }
}

async fn lifecycle(store: &dyn Store, i: u64) -> anyhow::Result<()> {
    let message = sms(i);
    let id = message.id.clone();
    // As the server creates it: `accepted` and `queued`.
    let record = MessageRecord::accepted(message, "ingest", "accepted");
    anyhow::ensure!(store.create(&record).await? == Created::New, "not created");
    let now = mdc_core::now();
    let lease = now + chrono::Duration::seconds(30);
    let Claim::Claimed { record, .. } = store.claim(&id, now, lease, "dispatcher").await? else {
        anyhow::bail!("not claimed");
    };
    let provider_message_id = format!("sim-{id}");
    let sent = Transition::Sent {
        attempt: record.attempts,
        provider: "simulator".to_owned(),
        provider_message_id: provider_message_id.clone(),
        event: Event::new("dispatcher", "sent")
            .status(Status::Sent)
            .provider("simulator", Some(&provider_message_id))
            .raw(serde_json::json!({"id": provider_message_id, "status": "accepted"})),
    };
    anyhow::ensure!(
        matches!(store.update(&id, sent).await?, Updated::Applied { .. }),
        "sent not applied"
    );
    let delivered = Transition::Reported {
        status: Status::Delivered,
        provider: "simulator".to_owned(),
        provider_message_id: provider_message_id.clone(),
        event: Event::new("response-handler", "delivered")
            .status(Status::Delivered)
            .raw(serde_json::json!({"id": provider_message_id, "status": "DELIVRD"})),
    };
    anyhow::ensure!(
        matches!(store.update(&id, delivered).await?, Updated::Applied { .. }),
        "delivered not applied"
    );
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stores: Vec<Arc<dyn Store>> = (0..args.files.max(1))
        .map(|i| {
            let db = Db::open(&dir.path().join(format!("store{i}.redb")))?;
            anyhow::Ok(Arc::new(EmbeddedStore::open(db)?) as Arc<dyn Store>)
        })
        .collect::<Result<_, _>>()?;
    eprintln!(
        "Taking {} messages through create, claim, sent and delivered, {} at a time",
        args.messages, args.concurrency
    );
    let next = Arc::new(AtomicU64::new(0));
    let cpu = crate::sample::cpu_seconds("self");
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let stores = stores.clone();
            let next = next.clone();
            let total = args.messages;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return anyhow::Ok(());
                    }
                    lifecycle(stores[i as usize % stores.len()].as_ref(), i).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = crate::sample::cpu_seconds("self") - cpu;
    let bytes = crate::sample::disk(dir.path());
    let n = args.messages.max(1) as f64;
    println!("store lifecycles/s    {:>8.0}", n / elapsed);
    println!(
        "CPU per lifecycle     {:>8.1} us (all threads)",
        cpu * 1e6 / n
    );
    println!("store file per msg    {:>8.0} bytes", bytes as f64 / n);
    Ok(())
}
