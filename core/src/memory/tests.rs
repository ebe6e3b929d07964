use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::contract::sample_message;
use crate::ports::Store;
use crate::{MessageRecord, Status};

/// Creating takes the records' lock and the keys' lock, as discarding
/// does; taken in opposite orders, the two deadlocked now and then.
#[test]
fn creating_and_discarding_at_once_never_deadlock() {
    let store = Arc::new(MemoryStore::default());
    let (done, finished) = std::sync::mpsc::channel();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    for _ in 0..20_000 {
                        let record = MessageRecord::new(
                            sample_message("+14155550100"),
                            Status::Queued,
                            crate::Event::new("test", "queued"),
                        );
                        store.create(&record).await.expect("create");
                        store.discard(&record).await.expect("discard");
                    }
                });
                let _ = done.send(());
            })
        })
        .collect();
    for _ in 0..workers.len() {
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("both workers finish (a deadlock never would)");
    }
    for worker in workers {
        worker.join().expect("worker");
    }
}
