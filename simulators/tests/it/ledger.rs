use std::sync::Arc;
use std::time::Duration;

use mdc_core::MessageId;
use mdc_simulators::{Entry, Ledger};
use tokio_util::sync::CancellationToken;

/// An id created `age` ago.
fn id_aged(age: chrono::Duration) -> MessageId {
    let ms = (mdc_core::now() - age).timestamp_millis() as u64;
    format!("msg_{}", ulid::Ulid::from_parts(ms, rand::random()))
        .parse()
        .expect("id")
}

async fn sent(ledger: &Ledger, id: &MessageId, report_pending: bool) {
    ledger
        .update(id, move |entry: &mut Entry| {
            entry.provider = "sim-sms".into();
            entry.calls += 1;
            entry.accepted += 1;
            entry.report_pending = report_pending;
        })
        .await
        .expect("update");
}

#[tokio::test]
async fn trimming_removes_old_entries_whose_report_is_not_owed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path()).expect("open");
    let old: Vec<MessageId> = (0..5)
        .map(|_| id_aged(chrono::Duration::days(40)))
        .collect();
    for id in &old {
        sent(&ledger, id, false).await;
    }
    let owed = id_aged(chrono::Duration::days(40));
    sent(&ledger, &owed, true).await;
    let recent = id_aged(chrono::Duration::days(29));
    sent(&ledger, &recent, false).await;

    let before = mdc_core::now() - chrono::Duration::days(30);
    assert_eq!(
        ledger.trim(before, 3).await.expect("trim"),
        3,
        "a batch at a time"
    );
    assert_eq!(ledger.trim(before, 3).await.expect("trim"), 2);
    assert_eq!(ledger.trim(before, 3).await.expect("trim"), 0);
    for id in &old {
        assert_eq!(ledger.get(id).expect("get"), None);
    }
    assert!(
        ledger.get(&owed).expect("get").is_some(),
        "a report still owed stays"
    );
    assert!(
        ledger.get(&recent).expect("get").is_some(),
        "a recent entry stays"
    );
    let owed_now: Vec<String> = ledger
        .owed()
        .expect("owed")
        .into_iter()
        .map(|(reference, _)| reference)
        .collect();
    assert_eq!(owed_now, vec![owed.to_string()]);
}

/// The periodic trim runs at once and then every interval: entries that
/// age past the horizon while it runs go at its next round.
#[tokio::test(start_paused = true)]
async fn the_ledger_is_trimmed_every_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Ledger::open(dir.path()).expect("open"));
    let keep = Duration::from_secs(3600);
    let interval = Duration::from_secs(600);
    let old = id_aged(chrono::Duration::hours(2));
    let ageing = id_aged(chrono::Duration::minutes(55));
    sent(&ledger, &old, false).await;
    sent(&ledger, &ageing, false).await;
    let shutdown = CancellationToken::new();
    let trimming = tokio::spawn(ledger.clone().keep_for(keep, interval, 1, shutdown.clone()));

    let gone = |id: MessageId| {
        let ledger = ledger.clone();
        async move {
            // Writes complete on the database's own thread: poll for them.
            for _ in 0..2_000 {
                if ledger.get(&id).expect("get").is_none() {
                    return true;
                }
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        }
    };
    assert!(gone(old.clone()).await, "trimmed at start");
    // Past the hour kept after five minutes, it goes at the next round, ten
    // minutes in: step the clock a second at a time and note when.
    let start = tokio::time::Instant::now();
    while ledger.get(&ageing).expect("get").is_some() {
        assert!(start.elapsed() < interval * 2, "never trimmed");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The trim's write completes on the database's own thread.
        std::thread::sleep(Duration::from_millis(1));
    }
    let trimmed_after = start.elapsed();
    assert!(
        trimmed_after >= interval - Duration::from_secs(1)
            && trimmed_after < interval + Duration::from_secs(30),
        "trimmed after {trimmed_after:?}, not at the next round"
    );
    shutdown.cancel();
    trimming.await.expect("stops");
}

/// A ledger written by the first layout (ids as text, entries as JSON) is
/// moved over when it opens: every entry reads back, reports owed are
/// still owed, and the old table is gone.
#[tokio::test]
async fn a_ledger_of_the_first_layout_is_moved_over() {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};
    const OLD: TableDefinition<&str, &[u8]> = TableDefinition::new("simulator_sends");
    let dir = tempfile::tempdir().expect("tempdir");
    let owed = id_aged(chrono::Duration::minutes(1));
    let done = id_aged(chrono::Duration::minutes(1));
    let owed_entry = Entry {
        provider: "sim-email".into(),
        calls: 2,
        accepted: 1,
        provider_message_id: Some("sim-42".into()),
        report: Some(mdc_core::ReportOutcome::Failed {
            reason: "mailbox full".into(),
            suppress: true,
        }),
        report_pending: true,
    };
    let done_entry = Entry {
        provider: "sim-sms".into(),
        calls: 1,
        accepted: 1,
        provider_message_id: Some("sim-43".into()),
        report: Some(mdc_core::ReportOutcome::Delivered),
        report_pending: false,
    };
    {
        let db =
            redb::Database::create(dir.path().join(mdc_simulators::LEDGER_FILE)).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(OLD).expect("table");
            for (id, entry) in [(&owed, &owed_entry), (&done, &done_entry)] {
                let json = serde_json::to_vec(entry).expect("json");
                table.insert(id.as_str(), json.as_slice()).expect("insert");
            }
            table.insert("not-an-id", b"{}".as_slice()).expect("insert");
            let damaged = id_aged(chrono::Duration::minutes(1));
            table
                .insert(damaged.as_str(), b"{\"provider\":".as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }

    let ledger = Ledger::open(dir.path()).expect("open");
    assert_eq!(ledger.get(&owed).expect("get"), Some(owed_entry.clone()));
    assert_eq!(ledger.get(&done).expect("get"), Some(done_entry));
    assert_eq!(
        ledger.owed().expect("owed"),
        vec![(owed.as_str().to_owned(), owed_entry)]
    );
    assert_eq!(ledger.page(None, 10).expect("page").len(), 2);
    drop(ledger);
    let db = redb::Database::open(dir.path().join(mdc_simulators::LEDGER_FILE)).expect("open");
    let txn = db.begin_read().expect("read");
    let names: Vec<String> = txn
        .list_tables()
        .expect("tables")
        .map(|t| t.name().to_owned())
        .collect();
    assert!(!names.contains(&"simulator_sends".to_owned()), "{names:?}");
}
